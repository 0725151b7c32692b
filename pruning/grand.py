"""GraNd: norm of the per-sample gradient of the flow loss at a proxy checkpoint."""

from __future__ import annotations

from typing import ClassVar

from pruning.base import Param, Pruner, ScoreContext, ScoreResult, keep_param, stat_column


class GraNdPruner(Pruner):
    """L2 norm of the gradient of the per-sample flow loss (the proxy DiT's output layer by
    default, ``proxy.grand_params: all`` for every parameter).

    Reads `stats["grad_norm"]` (N, G): the norm at each of G proxy checkpoints,
    each already averaged over the K fixed draws (computed by
    `pruning.stats.per_sample_grad_norms`). Default keeps the largest norms,
    as the paper's code (`grad`, `largest=not inverse`).

    Params:
        checkpoint: column of grad_norm (-1 = last checkpoint).
        keep: high keeps the largest gradient norms | low the smallest.
    """

    name: ClassVar[str] = "grand"
    needs_stats: ClassVar[tuple[str, ...]] = ("grad_norm",)
    PARAMS: ClassVar[dict[str, Param]] = {
        "checkpoint": Param(-1, (int,)),
        "keep": keep_param("high"),
    }

    def score(self, ctx: ScoreContext) -> ScoreResult:
        """Return the oriented (N,) gradient norms of column `checkpoint`."""
        norms = self._stat(ctx, "grad_norm")
        col = stat_column(norms.shape[1], self.params["checkpoint"], "checkpoint", self.name)
        return ScoreResult(scores=self._orient(norms[:, col]), meta={"column": col})
