"""Benchmark: pruning.clustering.kmeans vs scikit-learn KMeans (k-means++, n_init=1).

Data: 100k x 512 float32 Gaussian blobs with 100 true clusters of unequal size
(Dirichlet(1) proportions) and unequal spread, then L2-normalized as the
clustering pruner does. k=100, 25 Lloyd iterations for both. Reports wall time
and inertia of ours as ratios against scikit-learn measured in the same run.

    .venv/bin/python -m benchmarks.bench_kmeans [--n 100000] [--d 512] [--k 100]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from pruning.clustering import kmeans


def make_blobs(n: int, d: int, k: int, seed: int) -> np.ndarray:
    """(n, d) float32 unit vectors drawn around k random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)).astype(np.float32)
    sizes = rng.multinomial(n, rng.dirichlet(np.ones(k)))
    spread = rng.uniform(0.5, 1.5, size=k).astype(np.float32)
    labels = np.repeat(np.arange(k), sizes)
    x = centres[labels] + spread[labels, None] * rng.normal(size=(n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[rng.permutation(n)]


def inertia(x: np.ndarray, centroids: np.ndarray) -> float:
    """Sum of squared distances to the nearest centroid, float64, chunked."""
    total = 0.0
    c_sq = (centroids.astype(np.float64) ** 2).sum(1)
    for s in range(0, len(x), 8192):
        xb = x[s : s + 8192].astype(np.float64)
        d = (xb**2).sum(1)[:, None] - 2 * xb @ centroids.T.astype(np.float64) + c_sq[None]
        total += float(np.maximum(d.min(1), 0).sum())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--niter", type=int, default=25)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    from sklearn.cluster import KMeans  # benchmark-only dependency

    x = make_blobs(args.n, args.d, args.k, seed=0)
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs; data {x.shape} blobs, "
          f"k={args.k}, niter={args.niter}")
    rows = []
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        ref = KMeans(args.k, init="k-means++", n_init=1, max_iter=args.niter,
                     tol=0.0, random_state=seed).fit(x)
        t_ref = time.perf_counter() - t0
        t0 = time.perf_counter()
        centroids, _, dist = kmeans(x, args.k, seed=seed, niter=args.niter)
        t_ours = time.perf_counter() - t0
        i_ref, i_ours = inertia(x, ref.cluster_centers_), inertia(x, centroids)
        rows.append((t_ref, t_ours, i_ref, i_ours))
        print(f"seed {seed}: sklearn {t_ref:.2f}s inertia {i_ref:.1f} | "
              f"ours {t_ours:.2f}s inertia {i_ours:.1f} (faiss-reported {float(dist.sum()):.1f})")
    t_ref, t_ours, i_ref, i_ours = np.array(rows).mean(0)
    print(f"baseline = scikit-learn KMeans(k-means++, n_init=1, max_iter={args.niter})")
    print(f"speedup (sklearn time / ours): {t_ref / t_ours:.2f}x")
    print(f"inertia ratio (ours / sklearn): {i_ours / i_ref:.4f}")


if __name__ == "__main__":
    main()
