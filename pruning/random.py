"""Random pruning: a uniform, seeded subset (the paper's baseline)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from pruning.base import Param, Pruner, ScoreContext, ScoreResult


class RandomPruner(Pruner):
    """Uniform random subset.

    Scores are i.i.d. uniform draws from a Generator seeded by `ctx.seed`, so
    the kept sets at different ratios are nested (a 90% prune keeps a subset of
    the 50% prune's samples) and a seed always reproduces the same subset.
    """

    name: ClassVar[str] = "random"
    needs_stats: ClassVar[tuple[str, ...]] = ()
    PARAMS: ClassVar[dict[str, Param]] = {}

    def score(self, ctx: ScoreContext) -> ScoreResult:
        """Return (N,) uniform scores drawn from `default_rng(ctx.seed)`."""
        rng = np.random.default_rng(ctx.seed)
        return ScoreResult(scores=rng.random(ctx.n), meta={"seed": int(ctx.seed)})
