"""Chosen metrics against the pruning ratio, one line per method, from a committed trials.csv.

The report stage draws every metric of a run (``report/methods_<dataset>.png``); this
draws a few columns of a committed per-seed CSV (mean ± std over seeds, the full-data
model dashed), e.g. issue 12's open question: how far the samples are from the training
set and from its k-means centres, against the ratio, per method.

    python -m benchmarks.ratio_figure benchmarks/results/reproduce_<hash>_<date>.trials.csv \\
        --metrics fd_cls recall_cls mem_nn_mean_cls mem_centroid_nn_mean_effnet \\
        --out docs/figures/reproduce_distance_<date>.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from typing import Sequence

import pandas as pd

from eval.analysis.trials_table import TRIAL_KEYS, TrialsError, read_trials


def mean_std_table(trials: pd.DataFrame, metrics: Sequence[str],
                   source: str = "trials") -> pd.DataFrame:
    """Per (dataset, method, ratio): ``<metric>_mean``, ``<metric>_std`` over seeds.

    Args:
        trials: a checked trials table (:func:`eval.analysis.trials_table.read_trials`).
        metrics: its metric columns to aggregate.
        source: the file, named in the error of a missing column.

    Returns:
        One row per (dataset, method, ratio) in first-seen order, with ``n_seeds``.
    """
    missing = [m for m in metrics if m not in trials.columns]
    if missing:
        raise TrialsError(f"{source}: no column {missing[0]!r}; columns: "
                          f"{[c for c in trials.columns if c not in TRIAL_KEYS]}")
    keys = list(TRIAL_KEYS[:3])
    grouped = trials.groupby(keys, sort=False)
    out = grouped[list(metrics)].agg(["mean", "std"])
    out.columns = [f"{m}_{stat}" for m, stat in out.columns]
    out["n_seeds"] = grouped["seed"].nunique()
    return out.reset_index().sort_values(keys, kind="stable").reset_index(drop=True)


def draw(trials_csv: str, metrics: Sequence[str], out: str) -> str:
    """Write the figure of ``metrics`` against the ratio (one panel each) to ``out``."""
    from orchestrator.stages.report import plot_methods_vs_ratio

    table = mean_std_table(read_trials(trials_csv), metrics, trials_csv)
    if table["dataset"].nunique() != 1:
        raise TrialsError(f"{trials_csv}: one dataset per figure, found "
                          f"{sorted(table['dataset'].unique())}")
    with tempfile.TemporaryDirectory() as d:
        (path,) = plot_methods_vs_ratio(table, d, metrics)
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        shutil.copyfile(path, out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trials", help="a trials.csv (format: eval/analysis/trials_table.py)")
    ap.add_argument("--metrics", nargs="+", required=True, help="metric columns, one panel each")
    ap.add_argument("--out", required=True, help="PNG to write")
    args = ap.parse_args(argv)
    try:
        print(draw(args.trials, args.metrics, args.out))
    except (TrialsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
