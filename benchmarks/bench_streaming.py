"""Benchmark: the driver's memory and the encode pass's speed as the dataset grows.

For each size N (default 20,000 and 80,000) a folder of N synthetic 32x32 PNGs in 10
class folders is pruned with ``run_pipeline(cfg, until="select")`` (random and
clustering on ``pixels``, a 30-step VQ-VAE) in a fresh 'spawn' child process: that
child is the Ray driver, and its peak RSS (``resource.getrusage``) is what the stages
held on the driver. Latents and features are written as table parts by the Ray workers
(``orchestrator/storage/tables.py``), so the peak should hardly grow with N
(target: the 80k peak within 1.3x of the 20k peak).

The encode pass (``ensure_latents``: read, decode, VQ-VAE encode, write the parts; forced
on, since random and clustering alone would write the samples table without latents) is
timed inside the pipeline and set against a plain in-process loop over the same files
(read, ``decode_image``, ``VQVAE.encode`` in batches of 256 on the same 2 torch threads,
latents kept in memory), measured in the same run (target: >= 0.8x its images/s).

    .venv/bin/python -m benchmarks.bench_streaming [--sizes 20000 80000]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

from benchmarks._util import REPO, header, run_in_child, scratch_dir

RES = 32
CLASSES = 10


def make_folder(root: str, n: int, seed: int = 0) -> str:
    """``n`` PNGs of 32x32 noise over a per-class tint, in ``CLASSES`` class folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(CLASSES):
        os.makedirs(os.path.join(root, f"c{c}"), exist_ok=True)
    tint = rng.integers(0, 200, (CLASSES, 1, 1, 3))
    for i in range(n):
        c = i % CLASSES
        img = np.clip(tint[c] + rng.integers(0, 56, (RES, RES, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(root, f"c{c}", f"{i:06d}.png"))
    return root


def _config(folder: str, out: str) -> dict[str, Any]:
    return {
        "experiment": {"name": "stream", "seeds": [0], "output_dir": out},
        "data": {"datasets": [{"name": "synth", "source": "image_folder", "path": folder,
                               "class_subfolders": True, "conditional": True,
                               "resolution": RES, "holdout": 0.1}]},
        "autoencoder": {"preset": "vq-f4-c4", "train_steps": 30, "batch_size": 64},
        "embed": {"embedders": ["pixels"], "batch_size": 512},
        "eval": {"embedders": ["pixels"], "metrics": ["fd"], "num_real": 500},
        "pruning": {"ratios": [0.5], "baseline": False, "methods": [
            {"name": "random"},
            {"name": "clustering", "embedder": "pixels", "k": 10}]},
        "resources": {"actor_pool_size": 1},
    }


def pipeline_run(folder: str, out: str) -> dict[str, float]:
    """Child body: ``--until select`` on ``folder``; the encode pass's seconds and rows."""
    import yaml

    import orchestrator.pipeline as pipeline
    import orchestrator.stages.encode as encode
    from orchestrator.config import load_config
    from orchestrator.pipeline import run_pipeline
    from orchestrator.storage.tables import Table

    os.environ["PYTHONPATH"] = REPO + os.pathsep + os.environ.get("PYTHONPATH", "")
    os.environ["RAY_ADDRESS"] = "local"
    path = os.path.join(out, "cfg.yaml")
    os.makedirs(out, exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(_config(folder, out), f)
    cfg = load_config(path)
    timing: dict[str, float] = {}
    real = encode.ensure_latents

    def timed(cache, *args, **kwargs):   # the encode pass alone, not the VQ-VAE's training
        t0 = time.perf_counter()
        key = real(cache, *args, **kwargs)
        timing["encode_s"] = time.perf_counter() - t0
        timing["rows"] = Table(cache, key).rows
        return key

    encode.ensure_latents = timed
    # random and clustering alone need no latents (--until select then writes the samples
    # table without a VQ-VAE): measure the encode pass a sweep or a statistics method runs
    pipeline.needs_latents = lambda cfg, until: True
    code = run_pipeline(cfg, until="select")
    if code != 0:
        raise RuntimeError(f"the pipeline exited {code}")
    return timing


def plain_loop(folder: str, rows: int) -> dict[str, float]:
    """Child body: the same work in one process, no Ray: read, decode, encode ``rows`` files."""
    import torch

    from models.vqvae import build_vqvae, images_to_model
    from orchestrator.data.images import decode_image

    torch.set_num_threads(2)
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs)[:rows]
    model = build_vqvae("vq-f4-c4").eval()
    out = []
    t0 = time.perf_counter()
    for s in range(0, len(files), 256):
        batch = []
        for path in files[s:s + 256]:
            with open(path, "rb") as f:
                batch.append(decode_image(f.read(), RES))
        with torch.no_grad():
            out.append(model.encode(images_to_model(np.stack(batch))).numpy())
    return {"encode_s": time.perf_counter() - t0, "rows": len(files)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_streaming")
    p.add_argument("--sizes", type=int, nargs="+", default=[20000, 80000])
    args = p.parse_args(argv)
    header("bench_streaming", vars(args))
    tmp = scratch_dir("streaming")
    rows = []
    for n in args.sizes:
        t0 = time.perf_counter()
        folder = make_folder(os.path.join(tmp, f"images_{n}"), n)
        print(f"N={n}: {n} PNGs written in {time.perf_counter() - t0:.0f} s", flush=True)
        run = run_in_child(pipeline_run, folder, os.path.join(tmp, f"out_{n}"))
        if run["status"] != "ok":
            print(f"N={n}: the pipeline failed: {run['result']}")
            return 1
        got = run["result"]
        base = run_in_child(plain_loop, folder, int(got["rows"]))["result"]
        rows.append((n, run["peak_rss_mib"], got["rows"] / got["encode_s"],
                     base["rows"] / base["encode_s"]))
        print(f"N={n}: driver peak RSS {run['peak_rss_mib']:.0f} MiB; encode pass "
              f"{rows[-1][2]:.0f} img/s vs plain loop {rows[-1][3]:.0f} img/s "
              f"({rows[-1][2] / rows[-1][3]:.2f}x); whole --until select {run['wall_s']:.0f} s",
              flush=True)
    print("\n| N | driver peak RSS (MiB) | encode pass (img/s) | plain loop (img/s) | ratio |")
    print("|---:|---:|---:|---:|---:|")
    for n, rss, pipe, loop in rows:
        print(f"| {n} | {rss:.0f} | {pipe:.0f} | {loop:.0f} | {pipe / loop:.2f}x |")
    if len(rows) > 1:
        print(f"\ndriver peak RSS, N={rows[-1][0]} vs N={rows[0][0]}: "
              f"{rows[-1][1] / rows[0][1]:.2f}x (target <= 1.3x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
