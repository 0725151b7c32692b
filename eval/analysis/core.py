"""Verdict rows and the Holm family that produces them.

A *family* is one pre-registered question asked of one metric over several comparisons
(e.g. "(a) f_score_cls: every method at ratios >= 0.75 equivalent to full data?"). Its
rows are tested with the seed as the unit (:mod:`eval.analysis.inference`), Holm-adjusted
together, and each gets a verdict from its adjusted p alone:

- difference (``kind="diff"``): "holds" when the method is significantly better than the
  comparator, "does not hold" when significantly worse, "inconclusive" otherwise;
- equivalence (``kind="tost"``): "holds" when TOST shows equivalence within the margin,
  "does not hold" when the method is significantly worse beyond the margin,
  "inconclusive" otherwise (each of the two p-values Holm-adjusted over the family);
- trend (``kind="slope"``): "holds" when the per-seed slopes move significantly towards
  the training data as more is removed, "does not hold" when significantly away.

The MDE of each row is computed at ``alpha / m`` (the threshold Holm applies to the
family's smallest p, m its size): the smallest effect the design could detect there.
A row whose data is missing is "not measured" (no test, no verdict).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from eval.analysis.inference import NAN, TestResult, holm, paired_t, seed_slopes, tost, welch_t
from eval.analysis.plan import FULL, Plan, closer_is_higher, lower_is_better

HOLDS, FAILS, OPEN, UNMEASURED = "holds", "does not hold", "inconclusive", "not measured"
VERDICTS = (HOLDS, FAILS, OPEN)


@dataclass(frozen=True)
class Verdict:
    """One row of a verdict table.

    Attributes:
        dataset: the dataset of the trials.
        claim: "a", "b", "b-exploratory", "baseline", "c" or "d".
        family: the Holm family (one question on one metric).
        metric: the metric column tested.
        method: the method (A); against: the comparator (B: "full", a label, or
            "ratio" for a trend).
        ratio: the pruning ratio of A (NaN for a trend).
        result: the test (effect A - B, CI, t, df, p, se, MDE, n).
        p_holm: Holm-adjusted p within ``family``.
        verdict: "holds", "does not hold", "inconclusive" or "not measured".
        exploratory: not part of the confirmatory analysis (e.g. non-default variants).
        circular: the method selected its subset in the metric's space.
        note: what the reader must know besides the numbers ("" if nothing).
    """

    dataset: str
    claim: str
    family: str
    metric: str
    method: str
    against: str
    ratio: float
    result: TestResult
    p_holm: float
    verdict: str
    exploratory: bool = False
    circular: bool = False
    note: str = ""

    def row(self) -> dict:
        """Flat dict (one CSV / DataFrame row)."""
        r = self.result
        return {"dataset": self.dataset, "claim": self.claim, "family": self.family,
                "metric": self.metric, "method": self.method, "against": self.against,
                "ratio": self.ratio, "test": r.test, "n": r.n, "effect": r.effect,
                "ci_lo": r.ci[0], "ci_hi": r.ci[1], "p": r.p, "df": r.df, "p_holm": self.p_holm,
                "mde": r.mde, "verdict": self.verdict, "exploratory": self.exploratory,
                "circular": self.circular, "note": self.note}


@dataclass(frozen=True)
class Spec:
    """One planned comparison before testing.

    Attributes:
        method, against, ratio: as :class:`Verdict`.
        a: per-seed values of A (index: seed). For a trend: a frame with columns
            ``ratio, seed, value`` (A's trials and the full-data trials at ratio 0).
        b: per-seed values of B (index: seed); None for a trend.
        note: carried into the verdict.
    """

    method: str
    against: str
    ratio: float
    a: pd.Series | pd.DataFrame | None
    b: pd.Series | None = None
    note: str = ""


def per_seed(df: pd.DataFrame, method: str, metric: str, ratio: float | None = None) -> pd.Series:
    """Finite values of ``metric`` for ``method`` (at ``ratio``), indexed by seed."""
    sel = df["method"] == method
    if ratio is not None:
        sel &= np.isclose(df["ratio"], ratio)
    s = df.loc[sel].set_index("seed")[metric].astype(np.float64)
    return s[np.isfinite(s)]


def not_measured(dataset: str, claim: str, family: str, metric: str, method: str,
                 against: str, why: str, ratio: float = NAN) -> Verdict:
    """A row for a comparison without data: "not measured" and the reason."""
    res = TestResult("none", NAN, (NAN, NAN), NAN, NAN, NAN, NAN, NAN, 0, reason=why)
    return Verdict(dataset, claim, family, metric, method, against, ratio, res, NAN, UNMEASURED,
                   note=why)


def _test(spec: Spec, kind: str, margin: float, lower: bool, alpha: float,
          power: float) -> tuple[TestResult, str]:
    """Paired by seed where at least two seeds are common, else Welch; returns (result, note)."""
    if kind == "slope":
        f = spec.a
        res, slopes = seed_slopes(f["ratio"], f["value"], f["seed"], alpha, power)
        return res, (f"{len(slopes)} seeds with a slope" if res.reason else "")
    a, b = spec.a, spec.b
    common = a.index.intersection(b.index)
    paired = len(common) >= 2
    note = ""
    if paired and (len(common) < len(a) or len(common) < len(b)):
        note = f"paired over the {len(common)} common seeds ({len(a)} vs {len(b)} trials)"
    elif not paired:
        note = "unpaired (fewer than 2 common seeds): Welch"
    xa, xb = (a[common].to_numpy(), b[common].to_numpy()) if paired else (a.to_numpy(), b.to_numpy())
    if kind == "tost":
        return tost(xa, xb, margin, lower, paired, alpha, power), note
    return (paired_t(xa, xb, alpha, power) if paired else welch_t(xa, xb, alpha, power)), note


def _verdict(res: TestResult, kind: str, p_holm: float, worse_holm: float, good_sign: float,
             alpha: float) -> str:
    if kind == "tost":
        if p_holm < alpha:
            return HOLDS
        return FAILS if worse_holm < alpha else OPEN
    if not p_holm < alpha:
        return OPEN
    return HOLDS if res.effect * good_sign > 0 else FAILS


def run_family(dataset: str, claim: str, family: str, metric: str, specs: Sequence[Spec],
               kind: str, plan: Plan, margin: float = NAN, exploratory: bool = False,
               empty: str = "no comparison in the trials") -> list[Verdict]:
    """Test every comparison of one family, Holm-adjust, and give each its verdict.

    Args:
        dataset: the dataset name.
        claim: the claim tag of the rows.
        family: the family's name (shown above its table).
        metric: the metric column.
        specs: the planned comparisons (:class:`Spec`).
        kind: "diff" (paired t / Welch), "tost" (equivalence) or "slope" (per-seed slopes).
        plan: the analysis plan (alpha, power, circular methods).
        margin: the equivalence margin in the metric's units (``kind="tost"``).
        exploratory: mark every row exploratory.
        empty: the reason of the one "not measured" row returned when ``specs`` is empty.

    Returns:
        One :class:`Verdict` per spec, in order.
    """
    if not specs:
        return [not_measured(dataset, claim, family, metric, "*", "*", empty)]
    lower = lower_is_better(metric)
    alpha_m = plan.alpha / max(1, len(specs))
    tested = [_test(s, kind, margin, lower, alpha_m, plan.power) for s in specs]
    results = [r for r, _ in tested]
    p_holm = holm([r.p for r in results])
    worse_holm = holm([r.p_worse for r in results])
    better_holm = holm([r.p_better for r in results])
    if kind == "slope":
        good_sign = 1.0 if closer_is_higher(metric) else -1.0
    else:
        good_sign = -1.0 if lower else 1.0
    out = []
    for s, (r, note), p, pw, pb in zip(specs, tested, p_holm, worse_holm, better_holm):
        notes = [n for n in (s.note, note, r.reason and f"no test: {r.reason}") if n]
        if kind == "tost" and pw < plan.alpha:
            notes.append(f"worse beyond the margin ±{margin:.4g}: one-sided p {r.p_worse:.2g}, "
                         f"Holm {pw:.2g}")
        elif kind == "tost" and pb < plan.alpha:
            notes.append(f"better than full data beyond the margin ±{margin:.4g}: one-sided p "
                         f"{r.p_better:.2g}, Holm {pb:.2g}")
        out.append(Verdict(dataset, claim, family, metric, s.method, s.against, s.ratio, r,
                           float(p), _verdict(r, kind, float(p), float(pw), good_sign, plan.alpha),
                           exploratory, s.method in plan.circular, "; ".join(notes)))
    return out


def method_order(df: pd.DataFrame, plan: Plan) -> list[str]:
    """Methods of ``df`` (not full data): the config's order first, then any others."""
    present = [m for m in dict.fromkeys(df["method"]) if m != FULL]
    return [m for m in plan.methods if m in present] + [m for m in present if m not in plan.methods]


def high_ratios(df: pd.DataFrame, method: str, plan: Plan) -> list[float]:
    """The ratios >= ``plan.high_ratio`` that ``method`` ran at, ascending."""
    r = df.loc[df["method"] == method, "ratio"]
    return sorted(float(x) for x in r[r >= plan.high_ratio - 1e-9].unique())


def full_mean(df: pd.DataFrame, metric: str) -> float:
    """Mean of the full-data trials' ``metric`` (NaN without any)."""
    v = per_seed(df, FULL, metric)
    return float(v.mean()) if len(v) else math.nan
