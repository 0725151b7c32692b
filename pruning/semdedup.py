"""SemDeDup (Abbas et al. 2023): remove semantic near-duplicates within clusters."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from pruning.base import KMeansPruner, Param, ScoreContext, ScoreResult, kmeans_params


def max_earlier_similarity(x: np.ndarray, order: np.ndarray, block: int = 1024) -> np.ndarray:
    """For each member, the max cosine similarity to members earlier in `order`.

    Args:
        x: (n, D) L2-normalized features of one cluster.
        order: (n,) permutation: the keep-priority order inside the cluster.
        block: rows per matrix product, bounding memory to block * n floats.

    Returns:
        (n,) float64 indexed like x; -1 for the first member in `order`.
    """
    xs = x[order].astype(np.float32)
    n = len(order)
    out = np.full(n, -1.0)
    for s in range(0, n, block):
        sim = xs[s : s + block] @ xs[: s + block].T  # (b, s + b)
        # Row i of the block may only see earlier rows 0 .. s+i-1.
        col = np.arange(sim.shape[1])[None, :]
        row = (s + np.arange(sim.shape[0]))[:, None]
        sim = np.where(col < row, sim, -np.inf)
        out[s : s + block] = np.maximum(sim.max(axis=1), -1.0)
    result = np.empty(n)
    result[order] = out
    return result


class SemDeDupPruner(KMeansPruner):
    """Within each k-means cluster, drop samples nearly identical to a kept one.

    Inside a cluster, members are ordered by keep priority (farthest from the
    centroid first, as SemDeDup keeps the least prototypical member of each
    duplicate group); a member's score is 1 - its max cosine similarity to any
    earlier member. SemDeDup removes members whose score is below eps
    (similarity above 1 - eps) and keeps one of each duplicate group, the
    first. Ranking by this score and keeping the top round(N (1 - ratio)) is
    SemDeDup with eps chosen to reach the ratio, as the paper tunes eps per
    target size; meta["duplicates"] is the number removed at the given eps.

    Params:
        embedder: key of ctx.embeddings.
        k: number of clusters.
        eps: duplicate threshold (cosine similarity > 1 - eps).
        niter: Lloyd iterations.
    """

    name: ClassVar[str] = "semdedup"
    needs_stats: ClassVar[tuple[str, ...]] = ()
    PARAMS: ClassVar[dict[str, Param]] = kmeans_params(
        eps=Param(0.05, (float, int), check=lambda v: 0 <= v <= 2,
                  rule="must be in [0, 2]"),
    )

    def score(self, ctx: ScoreContext) -> ScoreResult:
        """Return (N,) 1 - max similarity to an earlier same-cluster member."""
        c = self.cluster(ctx)
        scores = np.empty(ctx.n)
        for g in np.unique(c.assign):
            members = np.flatnonzero(c.assign == g)
            # Farthest from the centroid first; stable on ties for determinism.
            order = np.argsort(-c.dist[members], kind="stable")
            scores[members] = 1.0 - max_earlier_similarity(c.x[members], order)
        dups = int((scores < float(self.params["eps"])).sum())
        return ScoreResult(scores=scores, groups=None,
                           meta={"k": int(c.k), "duplicates": dups, "eps": float(self.params["eps"])})
