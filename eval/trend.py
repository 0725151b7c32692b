"""The open question (d) against the ratio: does a metric change as more data is removed?

:func:`eval.verdicts.claim_d` compares each (method, ratio) with the full-data model,
one Welch test per cell, and Holm over all cells: with 4 ratios x 8 methods and 3 seeds,
a steady drift across ratios can stay below every corrected threshold. This asks the
question the issue asks, per method: the least-squares slope of the metric against the
pruning ratio over that method's trials and the full-data trials (ratio 0), its t-test
against zero (df = n - 2) and Holm over the methods.

The trials of one seed share the DiT's initial weights across ratios (the trial seed
seeds it), so they are not fully independent: the df overstate the evidence somewhat.
The table says so.

Used by ``benchmarks.paper_claims --distance`` and the verdict manifest's ``trend`` claim.
"""

from __future__ import annotations

import math
from typing import Collection

import numpy as np
import pandas as pd

from eval.significance import holm, slope_test
from eval.verdicts import (ALPHA, FULL, MARK, Claim, ClaimsError, _dataset_tag, _digits, _fmt,
                           _fmt_p, _methods, _name)


def claim_trend(df: pd.DataFrame, metric: str, circular: Collection[str] = (),
                dataset: str | None = None, lower: str = "closer", higher: str = "farther") -> Claim:
    """Per method, the slope of ``metric`` against the ratio (full data at ratio 0).

    Args:
        df: trials of one dataset (:func:`eval.trials.read_trials`).
        metric: metric column (a distance: lower = closer).
        circular: methods that selected in ``metric``'s feature space (marked †).
        dataset: dataset name for the headline (None: omitted).
        lower, higher: what a falling / rising metric means, in the verdicts.

    Returns:
        The :class:`~eval.verdicts.Claim`; ``rows`` hold method, the
        :class:`~eval.significance.SlopeResult` (``fit``), ``p_holm`` and ``verdict``.

    Raises:
        ClaimsError: the dataset has no full-data rows.
    """
    full = df[df["method"] == FULL]
    if not len(full):
        raise ClaimsError(f"{_dataset_tag(dataset)}no full-data rows (method '{FULL}') "
                          "for the trend of claim (d)")
    methods = _methods(df)
    fits = []
    for method in methods:
        sub = pd.concat([full, df[df["method"] == method]])
        fits.append(slope_test(sub["ratio"].to_numpy(), sub[metric].to_numpy()))
    adjusted = holm([f.p for f in fits])
    rows = []
    for method, fit, p in zip(methods, fits, adjusted):
        if not math.isfinite(p):
            verdict = f"no test: {fit.reason}"
        elif p < ALPHA:
            verdict = f"significantly {lower if fit.slope < 0 else higher} as more is removed"
        else:
            verdict = "no significant trend"
        rows.append({"method": method, "fit": fit, "p_holm": float(p), "verdict": verdict})
    n_low = sum(r["verdict"].startswith(f"significantly {lower}") for r in rows)
    n_high = sum(r["verdict"].startswith(f"significantly {higher}") for r in rows)
    head = (f"(d) {_dataset_tag(dataset)}trend of {metric} with the pruning ratio: {n_low} of "
            f"{len(rows)} methods significantly {lower}, {n_high} significantly {higher} "
            "as more is removed")
    scale = float(np.nanmean(np.abs(df[metric].to_numpy(dtype=np.float64)))) if len(df) else 1.0
    d = _digits(scale)
    lines = ["| method | trials | slope per unit ratio [95% CI] | t | df | p | p (Holm) | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = r["fit"]
        lines.append(f"| {_name(r['method'], circular)} | {f.n} | {_fmt(f.slope, d, '+')} "
                     f"[{_fmt(f.ci[0], d, '+')}, {_fmt(f.ci[1], d, '+')}] | {_fmt(f.t, 2, '+')} | "
                     f"{_fmt(f.df, 0)} | {_fmt_p(f.p)} | {_fmt_p(r['p_holm'])} | {r['verdict']} |")
    notes = [f"Least-squares slope of {metric} on the ratio over the method's trials and the "
             f"full-data trials (ratio 0); t = slope / se, df = trials − 2, two-sided p; Holm over "
             f"the {len(rows)} methods; significant at corrected p < {ALPHA}. Trials of one seed "
             "share the DiT's initial weights across ratios, so they are not fully independent "
             "and the df overstate the evidence somewhat."]
    if any(m in circular for m in methods):
        notes.append(f"{MARK} selected its subset in the feature space of {metric}: its distance "
                     "there follows partly from what it selected.")
    return Claim(head, "\n".join(lines + [""] + notes), rows)


def render_trend(df: pd.DataFrame, metric: str, circular: Collection[str] = ()) -> str:
    """Markdown of :func:`claim_trend` for every dataset of ``df`` (named when several)."""
    many = df["dataset"].nunique() > 1
    return "\n".join(claim_trend(df[df["dataset"] == ds], metric, circular, ds if many else None)
                     .markdown() for ds in dict.fromkeys(df["dataset"]))
