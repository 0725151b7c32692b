"""Self-supervised prototype score (Sorscher et al., NeurIPS 2022)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from pruning.base import KMeansPruner, Param, ScoreContext, ScoreResult, kmeans_params


class PrototypesPruner(KMeansPruner):
    """Difficulty = cosine distance of a sample to its k-means prototype.

    Unlike `clustering`, selection is global (no per-cluster quotas): Sorscher
    et al. rank all samples by distance to their nearest prototype and keep the
    hardest (farthest) when data is plentiful, the easiest when it is scarce.

    Params:
        embedder: key of ctx.embeddings.
        k: number of prototypes (k-means clusters).
        keep: farthest (hard, default, the paper's large-data regime) | nearest.
        niter: Lloyd iterations.
    """

    name: ClassVar[str] = "prototypes"
    needs_stats: ClassVar[tuple[str, ...]] = ()
    PARAMS: ClassVar[dict[str, Param]] = kmeans_params(
        keep=Param("farthest", (str,), choices=("farthest", "nearest")),
    )

    def score(self, ctx: ScoreContext) -> ScoreResult:
        """Return oriented (N,) cosine distances to the assigned prototype."""
        c = self.cluster(ctx)
        # Prototypes are normalized so the distance is a cosine distance, as in
        # the paper (k-means centroids of unit vectors have norm < 1).
        protos = c.centroids / np.maximum(np.linalg.norm(c.centroids, axis=1, keepdims=True),
                                          1e-12)
        x64, p64 = c.x.astype(np.float64), protos[c.assign].astype(np.float64)
        cos_dist = 1.0 - np.einsum("nd,nd->n", x64, p64)
        scores = cos_dist if self.params["keep"] == "farthest" else -cos_dist
        return ScoreResult(scores=scores, groups=None,
                           meta={"k": int(c.k), "inertia": float(c.dist.sum())})
