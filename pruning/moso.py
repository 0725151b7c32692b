"""MoSo: Moving-one-Sample-out score (Tan et al., NeurIPS 2023)."""

from __future__ import annotations

from typing import ClassVar

from pruning.base import Param, Pruner, ScoreContext, ScoreResult, keep_param


class MoSoPruner(Pruner):
    """Mean over proxy checkpoints of the MoSo score in `stats["moso"]` (N, G).

    The per-checkpoint score is computed by `pruning.stats.moso_scores` from
    the two-pass statistics. Higher MoSo means removing the sample would hurt
    the empirical risk more, so the default keeps high scores (the MoSo paper
    and the diffusion paper's code, `largest=not inverse`).

    Params:
        keep: high keeps the highest MoSo (whose removal hurts most) | low the lowest.
    """

    name: ClassVar[str] = "moso"
    needs_stats: ClassVar[tuple[str, ...]] = ("moso",)
    PARAMS: ClassVar[dict[str, Param]] = {"keep": keep_param("high")}

    def score(self, ctx: ScoreContext) -> ScoreResult:
        """Return oriented (N,) checkpoint-averaged MoSo scores."""
        moso = self._stat(ctx, "moso")
        return ScoreResult(scores=self._orient(moso.mean(axis=1)),
                           meta={"checkpoints": int(moso.shape[1])})
