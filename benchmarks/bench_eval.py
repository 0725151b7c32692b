"""Benchmark: eval metrics against their direct (dense) formulations.

1. Vendi, Gram path: N = 50k x D = 1280 (target < 5 s), and at N = 10k against the
   N x N kernel eigendecomposition (target >= 100x faster, same value).
2. PRDC at 10k x 10k (D = 64): ours (faiss k-NN + streamed float64 blocks) against a
   dense implementation holding three scipy ``cdist`` matrices (2.4 GB).

Data: Gaussian features (Vendi: 64 latent factors + noise, so the spectrum is not
flat). Every ratio compares two timings taken in the same run. Wall and CPU seconds
are both printed: on a shared machine wall time includes other people's load. Our
code runs ``--repeats`` times (median reported); the dense baselines run once.

    .venv/bin/python -m benchmarks.bench_eval [--vendi-n 50000] [--dim 1280]
        [--baseline-n 10000] [--prdc-n 10000] [--prdc-dim 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from typing import Callable

import numpy as np
from scipy.spatial.distance import cdist

from eval.prdc import compute_prdc
from eval.vendi import vendi_score


def timed(fn: Callable[[], object], repeats: int = 1) -> tuple[object, float, float]:
    """Run fn ``repeats`` times; return (result, median wall s, median process CPU s)."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return out, float(np.median(walls)), float(np.median(cpus))


def low_rank_features(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """(n, d) float32: 64 shared factors plus isotropic noise."""
    factors = rng.normal(size=(64, d)).astype(np.float32)
    coeff = rng.normal(size=(n, 64)).astype(np.float32)
    return coeff @ factors + 0.5 * rng.normal(size=(n, d)).astype(np.float32)


def dense_prdc(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
    """The textbook version: full N x N, M x M and N x M float64 distance matrices."""
    real, fake = real.astype(np.float64), fake.astype(np.float64)
    r_real = np.partition(cdist(real, real), k, axis=1)[:, k]  # column 0 is self
    r_fake = np.partition(cdist(fake, fake), k, axis=1)[:, k]
    d = cdist(real, fake)  # (N, M)
    inside = d <= r_real[:, None]
    precision = float(inside.any(axis=0).mean())
    recall = float((d <= r_fake[None, :]).any(axis=1).mean())
    return {
        "precision": precision,
        "recall": recall,
        "density": float(inside.sum() / (k * fake.shape[0])),
        "coverage": float(inside.any(axis=1).mean()),
        "f_score": 2 * precision * recall / (precision + recall),
    }


def bench_vendi(rng: np.random.Generator, n: int, d: int, baseline_n: int, repeats: int) -> None:
    x = low_rank_features(rng, n, d)
    vendi_score(x[:2000])  # warm-up: BLAS/LAPACK thread pools start on the first call
    value, wall, cpu = timed(lambda: vendi_score(x), repeats)
    print(f"vendi gram   N={n} D={d}: {wall:.2f} s wall, {cpu:.2f} s cpu, vendi={value:.6f} (target < 5 s)")

    xb = x[:baseline_n]
    ours, w_ours, c_ours = timed(lambda: vendi_score(xb, use_gram=True), repeats)
    ref, w_ref, c_ref = timed(lambda: vendi_score(xb, use_gram=False))  # once: minutes
    print(f"vendi gram   N={baseline_n} D={d}: {w_ours:.2f} s wall, {c_ours:.2f} s cpu, vendi={ours:.10f}")
    print(f"vendi NxN    N={baseline_n} D={d}: {w_ref:.2f} s wall, {c_ref:.2f} s cpu, vendi={ref:.10f}  [baseline]")
    print(
        f"vendi speedup vs N x N eigendecomposition: {w_ref / w_ours:.1f}x wall, {c_ref / c_ours:.1f}x cpu "
        f"(target >= 100x); |diff| = {abs(ours - ref):.2e}"
    )


def bench_prdc(rng: np.random.Generator, n: int, d: int, repeats: int) -> None:
    real = rng.normal(size=(n, d)).astype(np.float32)
    fake = (1.1 * rng.normal(size=(n, d)) + 0.1).astype(np.float32)
    ours, w_ours, c_ours = timed(lambda: compute_prdc(real, fake), repeats)
    ref, w_ref, c_ref = timed(lambda: dense_prdc(real, fake))
    print(f"prdc ours    {n}x{n} D={d}: {w_ours:.2f} s wall, {c_ours:.2f} s cpu, {ours}")
    print(f"prdc dense   {n}x{n} D={d}: {w_ref:.2f} s wall, {c_ref:.2f} s cpu, {ref}  [baseline]")
    worst = max(abs(ours[key] - ref[key]) for key in ref)
    print(f"prdc speedup vs dense cdist: {w_ref / w_ours:.2f}x wall, {c_ref / c_ours:.2f}x cpu; max |diff| = {worst:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vendi-n", type=int, default=50000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--baseline-n", type=int, default=10000)
    parser.add_argument("--prdc-n", type=int, default=10000)
    parser.add_argument("--prdc-dim", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="runs of our code (median); baselines run once")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}, numpy {np.__version__}"
    )
    print(f"ours: median of {args.repeats} runs; dense baselines: 1 run")
    bench_vendi(rng, args.vendi_n, args.dim, args.baseline_n, args.repeats)
    bench_prdc(rng, args.prdc_n, args.prdc_dim, args.repeats)


if __name__ == "__main__":
    main()
