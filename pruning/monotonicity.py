"""Loss monotonicity (the paper's "forgetting" score)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from pruning.base import Param, Pruner, ScoreContext, ScoreResult, keep_param


def increase_fraction(loss_traj: np.ndarray) -> np.ndarray:
    """Fraction of consecutive logged steps in which each sample's loss went up.

    Args:
        loss_traj: (N, T) per-sample loss at T logged proxy steps (each measured
            at the sample's fixed t/noise draws, so changes reflect the model).

    Returns:
        (N,) float64 in [0, 1]: #{s : loss[s+1] > loss[s]} / (T - 1).
    """
    traj = np.asarray(loss_traj, dtype=np.float64)
    if traj.ndim != 2 or traj.shape[1] < 2:
        raise ValueError(f"loss_traj must be (N, T) with T >= 2, got {traj.shape}")
    ups = np.diff(traj, axis=1) > 0
    return ups.sum(axis=1) / float(traj.shape[1] - 1)


class MonotonicityPruner(Pruner):
    """Non-monotonic loss: how often a sample's loss rose during proxy training.

    Default direction `keep: high` keeps the samples whose loss went up most
    often, as the paper's released code does (scoring_samples_forgetting.py
    counts `loss[l] < loss[l+1]`; train.py selects `largest=not inverse`). The
    released code divides the count by T instead of T - 1; that is a constant
    factor and does not change the ranking.

    Params:
        keep: high keeps the samples whose loss rose most often | low the fewest.
    """

    name: ClassVar[str] = "monotonicity"
    needs_stats: ClassVar[tuple[str, ...]] = ("loss_traj",)
    PARAMS: ClassVar[dict[str, Param]] = {"keep": keep_param("high")}

    def score(self, ctx: ScoreContext) -> ScoreResult:
        """Return oriented (N,) increase fractions of `stats["loss_traj"]`."""
        traj = self._stat(ctx, "loss_traj")
        frac = increase_fraction(traj)
        return ScoreResult(scores=self._orient(frac), meta={"steps": int(traj.shape[1])})
