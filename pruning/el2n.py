"""EL2N as adapted to diffusion: per-sample flow loss at a proxy checkpoint."""

from __future__ import annotations

from typing import ClassVar

from pruning.base import Param, Pruner, ScoreContext, ScoreResult, keep_param, stat_column


class EL2NPruner(Pruner):
    """Flow-matching loss of each sample at one logged proxy step.

    With the default ``checkpoint: last`` the loss is ``stats["loss_last"]`` (N, 1): the
    mean over the proxy's ``el2n_draws`` fixed (t, noise) draws at its last step (more
    draws than the trajectory's: split-half stability, benchmarks/results/
    stat_stability.md). Another checkpoint reads ``stats["loss_traj"][:, checkpoint]``
    (the mean over the trajectory's K draws). As in the paper's released code
    (`l2loss`, `largest=not inverse`), the default keeps the highest-loss
    (hardest) samples; `keep: low` keeps the easiest.

    Params:
        checkpoint: "last" (loss_last, the default) or a column of loss_traj (python
            indexing; -1 = the trajectory's last column, at the trajectory's K draws).
        keep: high keeps the hardest samples (highest loss) | low the easiest.
    """

    name: ClassVar[str] = "el2n"
    needs_stats: ClassVar[tuple[str, ...]] = ("loss_traj",)
    PARAMS: ClassVar[dict[str, Param]] = {
        "checkpoint": Param("last", (int, str), check=lambda v: not isinstance(v, str) or v == "last",
                            rule='"last" or a loss_traj column'),
        "keep": keep_param("high"),
    }

    def __init__(self, **params) -> None:
        super().__init__(**params)
        if self.params["checkpoint"] == "last":
            self.needs_stats = ("loss_last",)

    def score(self, ctx: ScoreContext) -> ScoreResult:
        """Return the oriented (N,) losses of column `checkpoint`."""
        if self.params["checkpoint"] == "last":
            last = self._stat(ctx, "loss_last")
            return ScoreResult(scores=self._orient(last[:, -1]), meta={"column": "last"})
        traj = self._stat(ctx, "loss_traj")
        col = stat_column(traj.shape[1], self.params["checkpoint"], "checkpoint", self.name)
        return ScoreResult(scores=self._orient(traj[:, col]), meta={"column": col})
