"""What the samples are: class shares by two labellers (claim (c)) and copies.

Claim (c): balanced clustering moves a skewed set's generated class shares closer to
uniform than random pruning. A generated sample has no label; it gets one from a
labeller, and the verdict is only as good as the labeller. Two are read from the trials:

- ``cov_pred_share_<c>_<short>``: share of samples the trained classifier predicts as
  class ``c`` (validated: its held-out accuracy is the ``classifier_accuracy`` column);
- ``cov_share_<c>_<short>``: share of samples whose nearest training image (in space
  ``<short>``) has class ``c`` (unvalidated; one column set per space).

Optional columns: ``subset_share_<c>`` (the true class shares of the kept training
subset itself: its KL to uniform is shown beside its samples') and
``cov_label_agreement_<short>`` (share of samples where the classifier and the nearest
neighbour in ``<short>`` agree; without it the table shows ``1 - TV`` of the two share
vectors, an upper bound on that agreement). A labeller that was not measured gives an
explicit "not measured" row. KL to uniform: ``sum_c p_c log(p_c C)``, natural log,
``0 log 0 = 0`` (as :mod:`eval.coverage`).

:func:`copy_rate` is the memorization measure that replaces "closer to copying".
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from eval.analysis.core import Spec, Verdict, method_order, not_measured, run_family
from eval.analysis.plan import FULL, Plan

PRED, NN, SUBSET = "cov_pred_share", "cov_share", "subset_share"
ACCURACY = "classifier_accuracy"
AGREEMENT = "cov_label_agreement"


def kl_to_uniform(shares: np.ndarray) -> np.ndarray:
    """KL(p || uniform) per row of class shares.

    Args:
        shares: (n, C) non-negative shares per row (rows are renormalised to sum 1;
            a row with a NaN gives NaN).

    Returns:
        (n,) float64 ``sum_c p_c log(p_c C)``.
    """
    p = np.asarray(shares, dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p * p.shape[1]), 0.0)
    out = terms.sum(axis=1)
    out[np.isnan(p).any(axis=1)] = np.nan
    return out


def share_columns(columns: pd.Index | list[str], prefix: str) -> dict[str, list[str]]:
    """``{suffix: [columns ordered by class]}`` for ``<prefix>_<c>[_<suffix>]`` columns."""
    pat = re.compile(rf"^{re.escape(prefix)}_(\d+)(?:_([A-Za-z0-9]+))?$")
    found: dict[str, dict[int, str]] = {}
    for col in columns:
        m = pat.match(str(col))
        if m:
            found.setdefault(m.group(2) or "", {})[int(m.group(1))] = str(col)
    return {k: [v[c] for c in sorted(v)] for k, v in found.items()}


def labellers(df: pd.DataFrame) -> dict[str, list[str]]:
    """``{labeller: share columns}``: ``pred_<short>`` first, then ``nn_<short>`` per space."""
    out = {f"pred_{k}": v for k, v in share_columns(df.columns, PRED).items()}
    out.update({f"nn_{k}": v for k, v in share_columns(df.columns, NN).items()})
    return out


def labeller_kl(df: pd.DataFrame, cols: list[str]) -> pd.Series:
    """(n_trials,) KL to uniform of the shares in ``cols`` per trial (index as ``df``)."""
    return pd.Series(kl_to_uniform(df[cols].to_numpy(dtype=np.float64)), index=df.index)


def claim_c(df: pd.DataFrame, plan: Plan, dataset: str = "") -> list[Verdict]:
    """(c) ``plan.balanced`` closer to uniform class shares than ``plan.baseline``, per labeller.

    One family per labeller (rows: ratios where both ran), paired t by seed on the KL to
    uniform of the samples' class shares. The classifier's predictions are the
    confirmatory labeller; nearest-neighbour labels are exploratory. Without share
    columns at all, or without ``plan.balanced`` in the trials, nothing is returned
    (the sweep did not ask (c)); without the classifier's predictions, a
    "not measured" row says so.

    Args:
        df: trials of one dataset with share columns.
        plan: the plan (``balanced``, ``baseline``, alpha, power).
        dataset: its name (carried into the rows).

    Returns:
        Rows (``claim = "c"``), one family per labeller; metric ``kl_uniform[<labeller>]``.
    """
    labs = labellers(df)
    bal, base = plan.balanced, plan.baseline
    if not labs or bal is None or not (df["method"] == bal).any():
        return []
    out: list[Verdict] = []
    if not any(k.startswith("pred_") for k in labs):
        out.append(not_measured(dataset, "c", "(c) classifier-predicted class shares", "kl_uniform",
                                bal, base, f"no {PRED}_<c>_<space> columns: the classifier's "
                                "predictions were not recorded"))
    for lab, cols in labs.items():
        kl = df.assign(_kl=labeller_kl(df, cols))
        metric = f"kl_uniform[{lab}]"
        fam = f"(c) {metric}: {bal} closer to uniform class shares than {base}"
        ratios = sorted(set(kl.loc[kl["method"] == bal, "ratio"])
                        & set(kl.loc[kl["method"] == base, "ratio"]))
        specs = [Spec(bal, base, float(r), _seeds(kl, bal, r), _seeds(kl, base, r)) for r in ratios]
        note = "" if lab.startswith("pred_") else "unvalidated labeller (nearest training image)"
        specs = [Spec(s.method, s.against, s.ratio, s.a, s.b, note) for s in specs]
        out += run_family(dataset, "c", fam, metric, specs, "diff", plan,
                          exploratory=not lab.startswith("pred_"))
    return out


def _seeds(df: pd.DataFrame, method: str, ratio: float) -> pd.Series:
    s = df[(df["method"] == method) & np.isclose(df["ratio"], ratio)].set_index("seed")["_kl"]
    return s[np.isfinite(s)]


def labeller_table(df: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    """Per (method, ratio): mean KL to uniform per labeller, of the training subset, agreement.

    Args:
        df: trials of one dataset.
        plan: the plan (method order).

    Returns:
        Columns ``method, ratio, seeds, kl_<labeller>..., kl_subset, agree_<short>...,
        classifier_accuracy``; a quantity that was not measured is the string
        "not measured". Empty frame when no share columns exist.
    """
    labs = labellers(df)
    if not labs:
        return pd.DataFrame()
    subset = share_columns(df.columns, SUBSET).get("", [])
    preds = share_columns(df.columns, PRED)
    pred = next(iter(preds.values()), None)
    rows = []
    for m in [FULL, *method_order(df, plan)]:
        for r in sorted(df.loc[df["method"] == m, "ratio"].unique()):
            t = df[(df["method"] == m) & np.isclose(df["ratio"], r)]
            row: dict = {"method": m, "ratio": float(r), "seeds": int(t["seed"].nunique())}
            for lab, cols in labs.items():
                row[f"kl_{lab}"] = float(np.nanmean(labeller_kl(t, cols)))
            row["kl_subset"] = float(np.nanmean(labeller_kl(t, subset))) if subset else "not measured"
            for short, cols in share_columns(df.columns, NN).items():
                key = f"{AGREEMENT}_{short}"
                if key in t.columns and t[key].notna().any():
                    row[f"agree_{short}"] = float(t[key].mean())
                elif pred is not None:
                    tv = 0.5 * np.abs(t[pred].to_numpy(float) - t[cols].to_numpy(float)).sum(axis=1)
                    row[f"agree_{short}"] = f"<= {float(np.nanmean(1 - tv)):.3f} (1 - TV)"
                else:
                    row[f"agree_{short}"] = "not measured"
            row[ACCURACY] = float(t[ACCURACY].mean()) if ACCURACY in t.columns else "not measured"
            rows.append(row)
    return pd.DataFrame(rows)


def copy_rate(fake_to_train_nn: np.ndarray, train_to_train_nn: np.ndarray,
              quantile: float = 0.05) -> float:
    """Share of generated samples nearer to a training image than training images are to each other.

    The threshold is the ``quantile`` of the training-to-training nearest-neighbour
    distances (each training image to its nearest *other* training image): a sample
    closer to its nearest training image than that is counted as a copy.

    Args:
        fake_to_train_nn: (M,) each generated sample's distance to its nearest training image.
        train_to_train_nn: (T,) each training image's distance to its nearest other one.
        quantile: in (0, 1); the stated quantile (default the 5th percentile).

    Returns:
        The share in [0, 1] of the M samples with distance strictly below the threshold.

    Raises:
        ValueError: empty or non-finite inputs, or ``quantile`` outside (0, 1).
    """
    f = np.asarray(fake_to_train_nn, dtype=np.float64).ravel()
    t = np.asarray(train_to_train_nn, dtype=np.float64).ravel()
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    if f.size == 0 or t.size == 0 or not (np.isfinite(f).all() and np.isfinite(t).all()):
        raise ValueError(f"need non-empty finite distances, got {f.size} and {t.size} values")
    return float((f < np.quantile(t, quantile)).mean())
