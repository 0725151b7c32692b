"""The pre-registered families: (a), each method vs the baseline, (b), (d); and :func:`analyse`.

Every family is one metric of :class:`~eval.analysis.plan.Plan` and one question, Holm
over its rows (:func:`eval.analysis.core.run_family`):

- (a) ``claim_a``: every method at ratios >= ``plan.high_ratio`` against the full-data
  model of the same seed, TOST within ``±plan.margin`` x |full-data mean|.
- baseline ``vs_baseline``: every other method against ``plan.baseline`` (random) at the
  same ratio >= ``plan.high_ratio``, paired by seed.
- (b) ``claim_b``: ``plan.contestant`` (the paper's code-default clustering variant)
  against every non-clustering method at each ratio >= ``plan.high_ratio``; the other
  clustering variants in their own family, marked exploratory (picking the best variant
  on the data it is then tested on would favour it).
- (d) ``claim_d``: per method and trend metric, the per-seed OLS slope of the metric on
  the ratio (full data at ratio 0), one-sample t over the seeds.
- (c) lives in :mod:`eval.analysis.samples` (it needs the two labellers).

Input: a trials table (:func:`eval.analysis.trials_table.check_trials`: ``dataset,
method, ratio, seed, <metric columns>``), one row per trial; the full-data trials have
method ``full``.
"""

from __future__ import annotations

import math

import pandas as pd

from eval.analysis.core import (Spec, Verdict, full_mean, high_ratios, method_order,
                                not_measured, per_seed, run_family)
from eval.analysis.plan import FULL, Plan


def _no_high(plan: Plan) -> str:
    return f"no comparison at a ratio >= {plan.high_ratio:g} in the trials"


def _missing(df: pd.DataFrame, metric: str) -> str:
    return "" if metric in df.columns and df[metric].notna().any() else f"no column {metric}"


def claim_a(df: pd.DataFrame, plan: Plan, dataset: str = "") -> list[Verdict]:
    """(a) quality holds at high ratios: TOST of each method against full data, per metric.

    Args:
        df: trials of one dataset.
        plan: the resolved analysis plan.
        dataset: its name (carried into the rows).

    Returns:
        Rows per metric family (``claim = "a"``).
    """
    out: list[Verdict] = []
    for metric in plan.metrics:
        fam = f"(a) {metric}: each method at ratio >= {plan.high_ratio:g} equivalent to full data " \
              f"(TOST, ±{plan.margin:.0%} of the full-data mean)"
        why = _missing(df, metric) or ("" if len(per_seed(df, FULL, metric)) else "no full-data trials")
        if why:
            out.append(not_measured(dataset, "a", fam, metric, "*", FULL, why))
            continue
        full = per_seed(df, FULL, metric)
        margin = plan.margin * abs(full_mean(df, metric))
        specs = [Spec(m, FULL, r, per_seed(df, m, metric, r), full)
                 for m in method_order(df, plan) for r in high_ratios(df, m, plan)]
        if not margin > 0:
            out.append(not_measured(dataset, "a", fam, metric, "*", FULL, "full-data mean is 0: "
                                    "a relative margin is 0"))
            continue
        out += run_family(dataset, "a", fam, metric, specs, "tost", plan, margin, empty=_no_high(plan))
    return out


def vs_baseline(df: pd.DataFrame, plan: Plan, dataset: str = "") -> list[Verdict]:
    """Each method against ``plan.baseline`` at the same ratio >= high, per metric (paired t).

    Args:
        df, plan, dataset: as :func:`claim_a`.

    Returns:
        Rows per metric family (``claim = "baseline"``); "holds" = significantly better.
    """
    out: list[Verdict] = []
    b = plan.baseline
    for metric in plan.metrics:
        fam = f"{metric}: each method better than {b} at ratio >= {plan.high_ratio:g}"
        why = _missing(df, metric) or ("" if (df["method"] == b).any() else f"no trials of {b}")
        if why:
            out.append(not_measured(dataset, "baseline", fam, metric, "*", b, why))
            continue
        specs = [Spec(m, b, r, per_seed(df, m, metric, r), per_seed(df, b, metric, r))
                 for m in method_order(df, plan) if m != b
                 for r in high_ratios(df, m, plan) if r in high_ratios(df, b, plan)]
        out += run_family(dataset, "baseline", fam, metric, specs, "diff", plan, empty=_no_high(plan))
    return out


def _b_specs(df: pd.DataFrame, plan: Plan, metric: str, contestant: str) -> list[Spec]:
    clus = {plan.contestant, *plan.exploratory}
    others = [m for m in method_order(df, plan) if m not in clus]
    return [Spec(contestant, o, r, per_seed(df, contestant, metric, r), per_seed(df, o, metric, r))
            for r in high_ratios(df, contestant, plan) for o in others
            if r in high_ratios(df, o, plan)]


def claim_b(df: pd.DataFrame, plan: Plan, dataset: str = "") -> list[Verdict]:
    """(b) clustering beats the other methods: the contestant vs each non-clustering method.

    The confirmatory family has the contestant only; each other clustering variant's
    comparisons form one exploratory family per metric (``claim = "b-exploratory"``).

    Args:
        df, plan, dataset: as :func:`claim_a`.

    Returns:
        Rows (``claim = "b"`` and ``"b-exploratory"``); "not measured" when the
        contestant did not run (the exploratory family is still computed).
    """
    out: list[Verdict] = []
    c = plan.contestant
    for metric in plan.metrics:
        fam = f"(b) {metric}: {c or 'the code-default clustering variant'} better than each " \
              f"non-clustering method at ratio >= {plan.high_ratio:g}"
        why = _missing(df, metric)
        if c is None or not (df["method"] == c).any():
            why = why or ("no code-default clustering variant (keep farthest, proportional "
                          "quotas) in the run" if c is None else f"no trials of {c}")
        if why:
            out.append(not_measured(dataset, "b", fam, metric, c or "clustering", "*", why))
        else:
            out += run_family(dataset, "b", fam, metric, _b_specs(df, plan, metric, c), "diff",
                              plan, empty=_no_high(plan))
        variants = [v for v in plan.exploratory if (df["method"] == v).any()]
        if variants and not _missing(df, metric):
            specs = [s for v in variants for s in _b_specs(df, plan, metric, v)]
            out += run_family(dataset, "b-exploratory",
                              f"(b, exploratory) {metric}: other clustering variants "
                              f"({', '.join(variants)}) vs each non-clustering method",
                              metric, specs, "diff", plan, exploratory=True, empty=_no_high(plan))
    return out


def claim_d(df: pd.DataFrame, plan: Plan, dataset: str = "") -> list[Verdict]:
    """(d) closer to the training data as more is removed? Per-seed slopes per method.

    Each trend metric is one family over the methods: the metric of the method's trials
    and of the full-data trials (ratio 0) regressed on the ratio, one slope per seed,
    then a one-sample t over the seeds (``df = n_seeds - 1``).

    Args:
        df, plan, dataset: as :func:`claim_a`.

    Returns:
        Rows per trend metric (``claim = "d"``); "holds" = significantly closer to the
        training data as more is removed, "not measured" for a missing column.
    """
    out: list[Verdict] = []
    for metric in plan.trend_metrics:
        fam = f"(d) {metric}: closer to the training data as more is removed (per-seed slopes)"
        why = _missing(df, metric) or ("" if len(per_seed(df, FULL, metric)) else "no full-data trials")
        if why:
            out.append(not_measured(dataset, "d", fam, metric, "*", "ratio", why))
            continue
        specs = []
        for m in method_order(df, plan):
            sub = df[df["method"].isin([FULL, m])][["ratio", "seed", metric]].dropna()
            specs.append(Spec(m, "ratio", math.nan, sub.rename(columns={metric: "value"})))
        out += run_family(dataset, "d", fam, metric, specs, "slope", plan)
    return out


def analyse(trials: pd.DataFrame, plan: Plan) -> list[Verdict]:
    """Every pre-registered family on every dataset of ``trials``.

    Args:
        trials: validated trials table (``dataset, method, ratio, seed, <metrics>``).
        plan: the resolved analysis plan.

    Returns:
        The verdict rows, per dataset: (a), baseline, (b), (c), (d).
    """
    from eval.analysis.samples import claim_c

    out: list[Verdict] = []
    for ds in dict.fromkeys(trials["dataset"]):
        sub = trials[trials["dataset"] == ds]
        for fn in (claim_a, vs_baseline, claim_b, claim_c, claim_d):
            out += fn(sub, plan, str(ds))
    return out
