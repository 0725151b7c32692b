"""Benchmark: how wall time and peak memory grow with N for the N-dependent steps.

Steps: embedding (``effnet_lite0`` in-process on Fashion-MNIST 32x32), k-means
(``pruning.kmeans.kmeans``, the clustering pruner's call) at each ``--k``, Vendi
(``eval.compute_vendi``), PRDC (``eval.compute_prdc``, real = fake = N) and
memorization (``eval.compute_memorization``, train = fake = N) on seeded random
(N, D) float32 features (D = 1280, effnet_lite0's width).

Every (step, N) runs in its own 'spawn' child process: inputs are built first, then
the step is timed; "peak RSS delta" is the child's peak RSS after the step minus its
peak before it (``resource.getrusage``), so it is what the step itself added. The
growth exponent between consecutive sizes is log(t2/t1) / log(N2/N1) (1 = linear).

    .venv/bin/python -m benchmarks.bench_scaling [--sizes 2000 8000 32000]
        [--pair-sizes 2000 4000 8000] [--embed-sizes 64 128 256] [--k 10 100]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from benchmarks._util import REPO, growth_exponent, header, peak_rss_mib, run_in_child


def _features(n: int, d: int, seed: int) -> np.ndarray:
    """(n, d) float32 clustered features (20 Gaussian blobs), built without float64 copies."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, d), dtype=np.float32)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x *= 0.5
    labels = rng.integers(0, 20, n)
    for s in range(0, n, 4096):  # in row blocks: no (n, d) temporary raises the base peak
        x[s:s + 4096] += centres[labels[s:s + 4096]]
    return x


def measure(step: str, n: int, d: int, k: int, repeats: int) -> dict[str, float]:
    """Child-process body: build inputs, then time one step (min of ``repeats``); RSS (MiB)."""
    import torch

    torch.set_num_threads(2)
    if step == "embed":
        import dataclasses

        from models import build_embedder
        from orchestrator.config import load_config
        from orchestrator.data.sources import load_arrays

        ds = load_config("experiments/quickstart.yaml", base_dir=REPO).data.datasets[0]
        images = load_arrays(dataclasses.replace(ds, limit=n)).images
        emb = build_embedder("effnet_lite0")
        emb(images[:8])  # first-call warm-up (allocator, kernels)
        run = lambda: np.concatenate(  # noqa: E731
            [emb(images[s:s + 128]) for s in range(0, n, 128)])
    else:
        x = _features(n, d, 0)
        if step == "kmeans":
            from pruning.kmeans import kmeans

            run = lambda: kmeans(x, k, seed=0)  # noqa: E731
        elif step == "vendi":
            from eval import compute_vendi

            run = lambda: compute_vendi(None, x)  # noqa: E731
        else:
            y = _features(n, d, 1)
            if step == "prdc":
                from eval import compute_prdc

                run = lambda: compute_prdc(x, y, k=3)  # noqa: E731
            elif step == "memorization":
                from eval import compute_memorization

                run = lambda: compute_memorization(None, y, train=x, train_full=x)  # noqa: E731
            else:
                raise ValueError(f"unknown step {step!r}")
    before = peak_rss_mib()
    walls = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        run()
        walls.append(time.perf_counter() - t0)
    return {"wall_s": min(walls), "wall_max_s": max(walls), "rss_before_mib": before,
            "rss_peak_mib": peak_rss_mib()}


def _row(label: str, sizes: list[int], outs: list[dict[str, Any]]) -> str:
    walls = [o["wall_s"] for o in outs]
    deltas = [max(0.0, o["rss_peak_mib"] - o["rss_before_mib"]) for o in outs]
    exps = [growth_exponent(sizes[i], walls[i], sizes[i + 1], walls[i + 1])
            for i in range(len(sizes) - 1)]
    cells = " | ".join(f"{w:.2f} s / {m:.0f} MiB" for w, m in zip(walls, deltas))
    return (f"| {label} | {', '.join(str(s) for s in sizes)} | {cells} | "
            f"{' , '.join(f'{e:.2f}' for e in exps)} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs=3, default=[2000, 8000, 32000],
                   help="N for k-means and Vendi (near-linear in N)")
    p.add_argument("--pair-sizes", type=int, nargs=3, default=[2000, 4000, 8000],
                   help="N for PRDC and memorization (exact all-pairs search, ~N^2)")
    p.add_argument("--embed-sizes", type=int, nargs=3, default=[64, 128, 256],
                   help="images for effnet_lite0 (slowest per item)")
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--k", type=int, nargs="+", default=[10, 100])
    p.add_argument("--repeats", type=int, default=3, help="timed calls per (step, N); min is kept")
    p.add_argument("--embed-repeats", type=int, default=1)
    p.add_argument("--steps", nargs="+", default=["embed", "kmeans", "vendi", "prdc", "memorization"])
    args = p.parse_args()
    header("bench_scaling", vars(args))
    jobs: list[tuple[str, str, list[int], int]] = []
    for step in args.steps:
        if step == "kmeans":
            jobs += [(f"k-means k={k}", "kmeans", args.sizes, k) for k in args.k]
        elif step == "vendi":
            jobs.append(("Vendi", step, args.sizes, 0))
        elif step == "embed":
            jobs.append(("embed effnet_lite0 (images)", step, args.embed_sizes, 0))
        else:
            jobs.append(({"prdc": "PRDC (k=3, M=N)", "memorization": "memorization (M=N)"}[step],
                         step, args.pair_sizes, 0))
    rows = []
    for label, step, sizes, k in jobs:
        outs = []
        for n in sizes:
            r = run_in_child(measure, step, n, args.dim, k,
                             args.embed_repeats if step == "embed" else args.repeats)
            if r["status"] != "ok":
                raise RuntimeError(f"{label} N={n}: {r['result']}")
            outs.append(r["result"])
            o = r["result"]
            print(f"{label} N={n}: {o['wall_s']:.2f}s (max {o['wall_max_s']:.2f}s), peak RSS "
                  f"{o['rss_before_mib']:.0f} -> {o['rss_peak_mib']:.0f} MiB", flush=True)
        rows.append(_row(label, sizes, outs))
    print(f"\nD = {args.dim} random clustered float32 features (embedding: Fashion-MNIST 32x32 images); "
          f"each cell: min wall of {args.repeats} calls ({args.embed_repeats} for embedding) / "
          "peak RSS delta of the step in its own process\n")
    print("| step | N | small | medium | large | growth exponent (small->medium, medium->large) |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
