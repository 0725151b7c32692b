"""Clustering-based pruning (the paper's best method) and its per-cluster quotas.

Embeddings are L2-normalized, clustered with faiss k-means, and each cluster
keeps a quota of samples chosen by distance to its centroid.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from pruning.base import (
    KMeansPruner,
    Param,
    ScoreContext,
    ScoreResult,
    keep_count,
    kmeans_params,
    select_in_groups,
)
from pruning.kmeans import kmeans

__all__ = [
    "ClusteringPruner", "kmeans", "proportional_quotas", "balanced_quotas", "distance_scores",
]

def proportional_quotas(sizes: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """Per-group quotas proportional to group size, summing exactly to m.

    Each group gets floor(n_c * m / N); the remaining slots go to the largest
    fractional remainders (ties broken by rng) — Hamilton's method.

    Args:
        sizes: (G,) group sizes n_c, summing to N.
        m: total kept, 0 <= m <= N.
        rng: breaks ties among equal remainders.

    Returns:
        (G,) int64 quotas with quota_c <= n_c and sum == m.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if not 0 <= m <= total:
        raise ValueError(f"cannot keep {m} of {total}")
    if total == 0:
        return np.zeros_like(sizes)
    exact = sizes * (m / total)
    quotas = np.floor(exact + 1e-9).astype(np.int64)
    quotas = np.minimum(quotas, sizes)
    short = m - int(quotas.sum())
    remainder = exact - quotas
    remainder[quotas >= sizes] = -np.inf  # full groups cannot take more
    order = np.lexsort((rng.permutation(len(sizes)), -remainder))
    quotas[order[:short]] += 1
    return quotas


def balanced_quotas(sizes: np.ndarray, m: int) -> np.ndarray:
    """Equal per-group quotas summing to m; shortfall goes to groups with spare.

    Water-filling: the largest q with sum(min(n_c, q)) <= m, then the leftover
    slots one each to the groups with the most spare samples (lowest id first
    on ties), so small groups are kept whole and big groups cut to a common size.

    Args:
        sizes: (G,) group sizes.
        m: total kept, 0 <= m <= sum(sizes).

    Returns:
        (G,) int64 quotas with quota_c <= n_c and sum == m.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if not 0 <= m <= int(sizes.sum()):
        raise ValueError(f"cannot keep {m} of {int(sizes.sum())}")
    lo, hi = 0, int(sizes.max(initial=0))
    while lo < hi:  # binary search for the water level q
        mid = (lo + hi + 1) // 2
        if int(np.minimum(sizes, mid).sum()) <= m:
            lo = mid
        else:
            hi = mid - 1
    quotas = np.minimum(sizes, lo)
    left = m - int(quotas.sum())
    spare = sizes - quotas
    order = np.lexsort((np.arange(len(sizes)), -spare))
    quotas[order[:left]] += 1  # left < #groups with spare, by maximality of q
    return quotas


def distance_scores(dist: np.ndarray, groups: np.ndarray, keep: str) -> np.ndarray:
    """Orient distances to the centroid into higher = keep scores.

    Args:
        dist: (N,) distance of each sample to its centroid.
        groups: (N,) cluster ids.
        keep: "nearest" (-dist), "farthest" (dist) or "mid": minus the distance
            of the sample's within-cluster distance rank from the middle rank, so
            a quota drops the nearest and the farthest in equal numbers (as the
            paper's mid_cluster).

    Returns:
        (N,) float64 scores.
    """
    dist = np.asarray(dist, dtype=np.float64)
    if keep == "nearest":
        return -dist
    if keep == "farthest":
        return dist.copy()
    if keep != "mid":
        raise ValueError(f"keep must be nearest|farthest|mid, got {keep!r}")
    order = np.lexsort((dist, groups))
    sizes = np.bincount(groups)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.empty(len(dist), dtype=np.float64)
    rank[order] = np.arange(len(dist)) - starts[groups[order]]
    return -np.abs(rank - (sizes[groups] - 1) / 2.0)


class ClusteringPruner(KMeansPruner):
    """k-means on an embedder's normalized features; per-cluster quotas.

    Params:
        embedder: key of ctx.embeddings (e.g. effnet_lite0, clip, dinov2).
        k: number of clusters.
        keep: nearest | farthest | mid (by distance to the centroid). Default
            farthest, as the paper's code (`furthestnearest_cluster`,
            `largest=not inverse`).
        mode: proportional (each cluster keeps n_c * (1 - ratio)) | balanced
            (equal quota per cluster, shortfall reallocated).
        niter: Lloyd iterations.
    """

    name: ClassVar[str] = "clustering"
    needs_stats: ClassVar[tuple[str, ...]] = ()
    PARAMS: ClassVar[dict[str, Param]] = kmeans_params(
        keep=Param("farthest", (str,), choices=("nearest", "farthest", "mid")),
        mode=Param("proportional", (str,), choices=("proportional", "balanced")),
    )

    def score(self, ctx: ScoreContext) -> ScoreResult:
        """Cluster, then score by oriented distance; groups = cluster ids."""
        c = self.cluster(ctx)
        scores = distance_scores(c.dist, c.assign, self.params["keep"])
        meta = {"k": int(c.k), "inertia": float(c.dist.sum()),
                "cluster_sizes": np.bincount(c.assign, minlength=c.k).tolist()}
        return ScoreResult(scores=scores, groups=c.assign, meta=meta)

    def select(self, result: ScoreResult, ratio: float, rng: np.random.Generator) -> np.ndarray:
        """Per-cluster quotas (proportional or balanced), best-scored first."""
        if result.groups is None:
            raise ValueError("clustering select needs ScoreResult.groups")
        m = keep_count(len(result.scores), ratio)
        sizes = np.bincount(result.groups)
        if self.params["mode"] == "proportional":
            quotas = proportional_quotas(sizes, m, rng)
        else:
            quotas = balanced_quotas(sizes, m)
        return select_in_groups(result.scores, result.groups, quotas, rng)
