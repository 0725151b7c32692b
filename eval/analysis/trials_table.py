"""The ``trials.csv`` table: raw per-trial results, the input of every verdict.

(Reads and writes the table of finished trials; training a trial is
``orchestrator/training/trial.py``'s.)

One row per trial, one column per metric::

    dataset,method,ratio,seed,<metric>,<metric>,...
    fmnist,full,0.0,0,137.9,...
    fmnist,random,0.9,0,136.4,...

- ``dataset`` (str), ``method`` (str; the full-data baseline is ``full`` at ratio 0),
  ``ratio`` (float in [0, 1), the fraction removed), ``seed`` (int, the trial seed).
- Every other column is a metric (float; an empty cell is a metric that failed).
- ``(dataset, method, ratio, seed)`` is unique.

Significance tests need these per-seed values; the aggregated ``results.csv``
(mean/std per row) cannot give them. The report stage writes ``report/trials.csv``
beside ``results.csv`` (:func:`trials_frame`); ``python -m eval.analysis.report`` and
``python -m orchestrator.compare`` read it (:func:`check_trials`, :func:`read_trials`).
This module is the one definition of the format.
"""

from __future__ import annotations

import os
from typing import Sequence

import pandas as pd

TRIAL_KEYS = ("dataset", "method", "ratio", "seed")


class TrialsError(ValueError):
    """A trials.csv that does not follow the format (one line, names the file)."""


def trials_frame(results: Sequence[dict]) -> pd.DataFrame:
    """Trial results as a trials.csv table, sorted by dataset, method, ratio, seed.

    Args:
        results: trial result dicts with ``trial`` {dataset, method, ratio, seed, ...}
            and ``metrics`` {name: float} (what the sweep stage returns).

    Returns:
        DataFrame with columns ``TRIAL_KEYS`` then the metrics in first-seen order.
    """
    rows = [{"dataset": r["trial"]["dataset"], "method": r["trial"]["method"],
             "ratio": float(r["trial"]["ratio"]), "seed": int(r["trial"]["seed"]),
             **{k: v for k, v in r["metrics"].items() if k not in TRIAL_KEYS}}
            for r in results]
    df = pd.DataFrame(rows, columns=None if rows else list(TRIAL_KEYS))
    return df.sort_values(list(TRIAL_KEYS), kind="stable").reset_index(drop=True)


def check_trials(df: pd.DataFrame, source: str = "trials") -> pd.DataFrame:
    """Validate a trials table and normalise its types.

    Args:
        df: the table as read (any column types).
        source: name used in error messages (the file path).

    Returns:
        A copy with ``ratio`` float64, ``seed`` int64, metrics float64.

    Raises:
        TrialsError: a missing key column, no metric column, a non-numeric ratio,
            seed or metric, a ratio outside [0, 1), or a duplicated trial.
    """
    missing = [c for c in TRIAL_KEYS if c not in df.columns]
    if missing:
        raise TrialsError(f"{source}: missing column(s) {', '.join(missing)} "
                          f"(a trials.csv has {', '.join(TRIAL_KEYS)}, <metrics>)")
    metrics = [c for c in df.columns if c not in TRIAL_KEYS]
    if not metrics:
        raise TrialsError(f"{source}: no metric columns besides {', '.join(TRIAL_KEYS)}")
    out = df.copy()
    out["dataset"] = out["dataset"].astype(str)
    out["method"] = out["method"].astype(str)
    for col in ["ratio", "seed", *metrics]:
        num = pd.to_numeric(out[col], errors="coerce")
        # a metric may be empty (it failed); a key may not
        bad = (num.isna() & out[col].notna()) if col in metrics else num.isna()
        if bad.any():
            raise TrialsError(f"{source}: column {col} has a non-numeric or empty value "
                              f"(data row {int(bad.to_numpy().argmax()) + 1})")
        out[col] = num.astype("float64")
    if ((out["ratio"] < 0) | (out["ratio"] >= 1)).any():
        raise TrialsError(f"{source}: column ratio must lie in [0, 1)")
    if (out["seed"] != out["seed"].round()).any():
        raise TrialsError(f"{source}: column seed must hold integers")
    out["seed"] = out["seed"].astype("int64")
    dup = out.duplicated(list(TRIAL_KEYS))
    if dup.any():
        row = out[dup].iloc[0]
        raise TrialsError(f"{source}: duplicate trial {row['dataset']}/{row['method']}/"
                          f"{row['ratio']:g}/seed {row['seed']}")
    return out


def read_trials(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a trials.csv.

    Args:
        path: the CSV file.

    Returns:
        The validated table (see :func:`check_trials`).

    Raises:
        TrialsError: the file cannot be read or does not follow the format.
    """
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise TrialsError(f"{path}: cannot read trials CSV ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None
    return check_trials(df, str(path))
