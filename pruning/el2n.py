"""EL2N as adapted to diffusion: per-sample flow loss at a proxy checkpoint."""

from __future__ import annotations

from typing import ClassVar

from pruning.base import Param, Pruner, ScoreContext, ScoreResult, keep_param


class EL2NPruner(Pruner):
    """Flow-matching loss of each sample at one logged proxy step.

    The loss in `stats["loss_traj"][:, checkpoint]` is already the mean over
    the K fixed (t, noise) draws of that sample. As in the paper's released code
    (`l2loss`, `largest=not inverse`), the default keeps the highest-loss
    (hardest) samples; `keep: low` keeps the easiest.

    Params:
        checkpoint: column of loss_traj (python indexing; -1 = last logged step).
        keep: high | low.
    """

    name: ClassVar[str] = "el2n"
    needs_stats: ClassVar[tuple[str, ...]] = ("loss_traj",)
    PARAMS: ClassVar[dict[str, Param]] = {
        "checkpoint": Param(-1, (int,)),
        "keep": keep_param("high"),
    }

    def score(self, ctx: ScoreContext) -> ScoreResult:
        """Return the oriented (N,) losses of column `checkpoint`."""
        traj = self._stat(ctx, "loss_traj")
        col = _column(traj.shape[1], self.params["checkpoint"], "checkpoint", self.name)
        return ScoreResult(scores=self._orient(traj[:, col]), meta={"column": col})


def _column(width: int, index: int, key: str, pruner: str) -> int:
    """Resolve a python-style column index into [0, width) or raise ValueError."""
    if not -width <= index < width:
        raise ValueError(
            f"pruner '{pruner}': parameter '{key}'={index} is out of range for {width} columns"
        )
    return index % width
