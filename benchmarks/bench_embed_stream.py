"""Benchmark: the embed stage's Ray Data actor pool vs a plain in-process torch loop.

Same model (``models.build_embedder("effnet_lite0")``), same images (Fashion-MNIST
at 32x32 through ``orchestrator.data.sources``), same batch size and torch threads. The
Ray side is the pipeline's own path: ``orchestrator.runtime.ray_sources.load_dataset`` ->
``orchestrator.runtime.cluster.map_actor_pool(..., orchestrator.stages.embed.EmbedActor, ...)`` with
the resource plan of ``experiments/quickstart.yaml``, writing table parts as the stage does.

Reported (images/s, and the ratio Ray / plain loop; target >= 0.9x):

* with start-up: Ray = ``ray.init`` + dataset + actor start + model build + map +
  collect, cold; plain = embedder build + loop.
* without start-up: Ray = N / (T(N) - T(tiny)) in a warm Ray session, where T(tiny)
  is the same pass over one small batch (actor start + model build + scheduling);
  plain = the loop alone.

The plain loop runs before and after the Ray passes (the machine is shared; the
mean of the two is the baseline, both are printed).

    .venv/bin/python -m benchmarks.bench_embed_stream [--images 512] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

import numpy as np

from benchmarks._util import REPO, header, private_ray, scratch_dir


def _dataset_cfg(config: str, n: int) -> tuple[Any, Any]:
    """(config, first dataset entry limited to n images) of the given experiment YAML."""
    from orchestrator.config import load_config

    cfg = load_config(config, base_dir=REPO)
    return cfg, dataclasses.replace(cfg.data.datasets[0], limit=n)


def plain_loop(ds_cfg: Any, batch_size: int, threads: int) -> dict[str, float]:
    """Embedder build + in-process loop over the same images; seconds of each part."""
    import torch

    from models import build_embedder
    from orchestrator.data.sources import load_arrays

    torch.set_num_threads(threads)
    images = load_arrays(ds_cfg).images
    t0 = time.perf_counter()
    emb = build_embedder("effnet_lite0")
    t1 = time.perf_counter()
    feats = [emb(np.ascontiguousarray(images[s:s + batch_size])) for s in range(0, len(images), batch_size)]
    t2 = time.perf_counter()
    assert np.concatenate(feats).shape == (len(images), emb.dim)
    return {"n": len(images), "build_s": t1 - t0, "loop_s": t2 - t1}


def _ray_pass(ds: Any, plan: Any, batch_size: int, n: int) -> float:
    """Seconds of one pipeline embed pass (map_actor_pool writing table parts, then the
    index), into a scratch cache."""
    import tempfile

    from orchestrator.runtime.cluster import collect_reports, map_actor_pool
    from orchestrator.stages.embed import EmbedActor
    from orchestrator.storage.cache import ArtifactCache
    from orchestrator.storage.tables import finish_table

    cache = ArtifactCache(tempfile.mkdtemp(prefix="pd_embed_", dir="/tmp"))
    t0 = time.perf_counter()
    out = map_actor_pool(ds, EmbedActor,
                         {"name": "effnet_lite0", "weights": None, "device": "cpu",
                          "threads": plan.actor_threads, "cache_root": cache.root,
                          "table_key": "embed/bench"}, plan, batch_size)
    parts = [r["part"] for r in collect_reports(out) if r["part"]]
    finish_table(cache, "embed/bench", parts)
    dt = time.perf_counter() - t0
    rows = sum(p["rows"] for p in parts)
    if rows != n:
        raise RuntimeError(f"got {rows} features for {n} images")
    return dt


def ray_stream(cfg: Any, ds_cfg: Any, batch_size: int, tiny: int) -> dict[str, Any]:
    """Cold pass (with Ray start), tiny pass and warm pass of the pipeline's embed path."""
    from orchestrator.runtime.cluster import current_plan
    from orchestrator.runtime.ray_sources import load_dataset
    from orchestrator.runtime.resources import describe

    t0 = time.perf_counter()
    with private_ray(scratch_dir("embed_ray")) as ray:
        t_init = time.perf_counter() - t0
        plan = current_plan(cfg.resources)
        t1 = time.perf_counter()
        source = load_dataset(ds_cfg)
        t_data = time.perf_counter() - t1
        cold = _ray_pass(source.dataset, plan, batch_size, source.count)
        small = load_dataset(dataclasses.replace(ds_cfg, limit=tiny))
        t_tiny = _ray_pass(small.dataset, plan, batch_size, small.count)
        warm = _ray_pass(source.dataset, plan, batch_size, source.count)
        assert ray.is_initialized()
    return {"n": source.count, "init_s": t_init, "data_s": t_data, "cold_s": cold,
            "tiny_s": t_tiny, "tiny_n": small.count, "warm_s": warm, "plan": describe(plan),
            "threads": plan.actor_threads}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=512, help="Fashion-MNIST images (32x32)")
    p.add_argument("--batch-size", type=int, default=128, help="as embed.batch_size")
    p.add_argument("--tiny", type=int, default=8, help="images of the start-up-only pass")
    p.add_argument("--config", default="experiments/quickstart.yaml")
    args = p.parse_args()
    header("bench_embed_stream", vars(args))
    cfg, ds_cfg = _dataset_cfg(args.config, args.images)
    from orchestrator.runtime.resources import plan_resources

    import os

    threads = plan_resources(cfg.resources, {"CPU": float(os.cpu_count() or 1)}).actor_threads
    before = plain_loop(ds_cfg, args.batch_size, threads)
    print(f"plain loop (before): build {before['build_s']:.2f}s, loop {before['loop_s']:.2f}s", flush=True)
    r = ray_stream(cfg, ds_cfg, args.batch_size, args.tiny)
    print(f"ray: init {r['init_s']:.2f}s, dataset {r['data_s']:.2f}s, cold pass {r['cold_s']:.2f}s, "
          f"tiny pass ({r['tiny_n']} img) {r['tiny_s']:.2f}s, warm pass {r['warm_s']:.2f}s; {r['plan']}",
          flush=True)
    after = plain_loop(ds_cfg, args.batch_size, threads)
    print(f"plain loop (after): build {after['build_s']:.2f}s, loop {after['loop_s']:.2f}s", flush=True)
    n = r["n"]
    loop_s = (before["loop_s"] + after["loop_s"]) / 2
    build_s = (before["build_s"] + after["build_s"]) / 2
    rows = [
        ("with start-up", n / (r["init_s"] + r["data_s"] + r["cold_s"]), n / (build_s + loop_s)),
        ("warm Ray, with actor start", n / r["warm_s"], n / (build_s + loop_s)),
        ("without start-up", n / max(1e-9, r["warm_s"] - r["tiny_s"]), n / loop_s),
    ]
    print(f"\n{n} images 32x32, effnet_lite0, batch {args.batch_size}, {threads} torch thread(s) each side\n")
    print("| measure | Ray Data actor pool (img/s) | plain loop (img/s) | ratio (target >= 0.9x) |")
    print("|---|---:|---:|---:|")
    for name, ray_rate, plain_rate in rows:
        print(f"| {name} | {ray_rate:.1f} | {plain_rate:.1f} | {ray_rate / plain_rate:.2f}x |")
    best = min(before, after, key=lambda x: x["loop_s"])
    print(f"\nplain loop img/s before/after the Ray passes: {n / before['loop_s']:.1f} / "
          f"{n / after['loop_s']:.1f}; Ray fixed costs: init {r['init_s']:.1f}s, "
          f"tiny pass {r['tiny_s']:.1f}s")
    best_rates = [n / (best["build_s"] + best["loop_s"])] * 2 + [n / best["loop_s"]]
    print("against the faster plain run (conservative): "
          + ", ".join(f"{name} {ray_rate / b:.2f}x" for (name, ray_rate, _), b in zip(rows, best_rates)))


if __name__ == "__main__":
    main()
