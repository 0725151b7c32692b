"""Coverage-centric coreset selection (Zheng et al., ICLR 2023)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from pruning.base import Param, Pruner, ScoreContext, ScoreResult, keep_count


def stratum_budgets(sizes: np.ndarray, m: int) -> np.ndarray:
    """CCS budget allocation over strata (Algorithm 1 of Zheng et al.).

    Repeatedly take the non-empty stratum with the fewest samples and give it
    min(size, floor(remaining budget / remaining strata)); the leftover of the
    final integer division goes one each to the largest strata with spare room.

    Args:
        sizes: (S,) samples per stratum.
        m: total budget, 0 <= m <= sum(sizes).

    Returns:
        (S,) int64 budgets, budget_s <= size_s, summing to m.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if not 0 <= m <= int(sizes.sum()):
        raise ValueError(f"cannot keep {m} of {int(sizes.sum())}")
    budgets = np.zeros_like(sizes)
    remaining = m
    open_ids = [int(i) for i in np.argsort(sizes, kind="stable") if sizes[i] > 0]
    for pos, s in enumerate(open_ids):
        share = remaining // (len(open_ids) - pos)
        budgets[s] = min(int(sizes[s]), share)
        remaining -= int(budgets[s])
    spare = sizes - budgets
    for s in np.argsort(-spare, kind="stable")[:remaining]:
        budgets[s] += 1  # remaining < #strata with spare (each got its floor share)
    return budgets


class CCSPruner(Pruner):
    """Drop the hardest beta fraction, then sample evenly across score strata.

    The base score (difficulty, higher = harder/more important) is the
    default-oriented score of another registered method, e.g. el2n; its
    statistics must be in ctx.stats. The kept range [min, max] of base scores
    is split into `strata` equal-width bins, budgets are assigned by
    `stratum_budgets`, and each stratum is sampled uniformly at random.

    If the pruning budget exceeds what survives the beta cut, the cut is
    relaxed: the least hard of the cut samples are admitted first.

    Params:
        base: PRUNERS key supplying the difficulty score (not ccs).
        base_params: params for that pruner.
        beta: fraction of the hardest samples removed before sampling.
        strata: number of equal-width score bins.
    """

    name: ClassVar[str] = "ccs"
    needs_stats: ClassVar[tuple[str, ...]] = ("loss_traj",)
    PARAMS: ClassVar[dict[str, Param]] = {
        "base": Param("el2n", (str,)),
        "base_params": Param(None, (dict, type(None))),
        "beta": Param(0.1, (float, int), check=lambda v: 0 <= v < 1, rule="must be in [0, 1)"),
        "strata": Param(50, (int,), check=lambda v: v > 0, rule="must be > 0"),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        from pruning import PRUNERS  # registry imports this module

        base = self.params["base"]
        if base not in PRUNERS or base == self.name:
            raise ValueError(
                f"pruner 'ccs': parameter 'base' must be one of "
                f"{sorted(k for k in PRUNERS if k != self.name)}, got {base!r}"
            )
        self.base = PRUNERS[base](**(self.params["base_params"] or {}))
        # Instance attributes shadow the class defaults: depend on the base.
        self.needs_stats = self.base.needs_stats
        self.embedder = self.base.embedder

    def score(self, ctx: ScoreContext) -> ScoreResult:
        """Base difficulty as scores; groups = stratum of each sample, -1 = cut."""
        base = self.base.score(ctx).scores.astype(np.float64)
        n_cut = int(np.floor(self.params["beta"] * ctx.n))
        order = np.argsort(-base, kind="stable")
        cut = np.zeros(ctx.n, dtype=bool)
        cut[order[:n_cut]] = True
        kept = base[~cut]
        lo, hi = (kept.min(), kept.max()) if kept.size else (0.0, 0.0)
        width = (hi - lo) / self.params["strata"]
        groups = np.zeros(ctx.n, dtype=np.int64)
        if width > 0:
            groups = np.clip(((base - lo) / width).astype(np.int64), 0, self.params["strata"] - 1)
        groups[cut] = -1
        return ScoreResult(scores=base, groups=groups,
                           meta={"cut": n_cut, "strata": int(self.params["strata"]),
                                 "base": self.params["base"]})

    def select(self, result: ScoreResult, ratio: float, rng: np.random.Generator) -> np.ndarray:
        """Stratified uniform sampling over non-cut strata (exact count)."""
        if result.groups is None:
            raise ValueError("ccs select needs ScoreResult.groups")
        n = len(result.scores)
        m = keep_count(n, ratio)
        groups = result.groups
        eligible = np.flatnonzero(groups >= 0)
        chosen: list[np.ndarray] = []
        if m > eligible.size:
            # Relax the beta cut: admit the least hard cut samples.
            cut = np.flatnonzero(groups < 0)
            chosen.append(eligible)
            chosen.append(cut[np.argsort(result.scores[cut], kind="stable")[: m - eligible.size]])
        else:
            sizes = np.bincount(groups[eligible], minlength=self.params["strata"])
            budgets = stratum_budgets(sizes, m)
            for s in np.flatnonzero(budgets):
                members = eligible[groups[eligible] == s]
                chosen.append(rng.choice(members, size=int(budgets[s]), replace=False))
        keep = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
        return np.sort(keep).astype(np.int64)
