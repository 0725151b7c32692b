"""Compare two finished sweeps: ``python -m orchestrator.compare OUT_A OUT_B`` (or
``prunediff compare OUT_A OUT_B``).

Reads each sweep's per-trial results, ``<output_dir>/report/trials.csv`` (one row per
seed, format :mod:`eval.analysis.trials_table`; written by the report stage), and prints
one line per (dataset, method, ratio, metric) present in both: the mean of each sweep
over its seeds, the difference B - A, Welch's t-test of it (t, Welch-Satterthwaite df,
two-sided p; :func:`eval.analysis.inference.welch_t`) and the Holm-adjusted p over all
printed lines (one family, :func:`eval.analysis.inference.holm`). Rows only one sweep
has are listed after.

Welch does not pair seeds: two sweeps share seeds only by their configs, and a changed
config (the point of comparing) changes every trial. With one seed per row there is no
test (``p`` is ``nan`` and the reason is printed).

Exit codes: 0 printed; 2 a folder without results, or no row or metric in common
(one line on stderr).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from eval.analysis.inference import holm, welch_t
from eval.analysis.trials_table import TRIAL_KEYS, TrialsError, read_trials

ROW = ["dataset", "method", "ratio"]
TRIALS = "trials.csv"
# per-class shares: one column per class, not a comparison
HIDDEN = ("cov_share_", "cov_pred_share_", "subset_share_")


class CompareError(ValueError):
    """Two sweeps that cannot be compared (one line, exit 2)."""


def trials_path(out: str | Path) -> Path:
    """``<out>/report/trials.csv``; ``out`` may also be the report folder or the CSV."""
    p = Path(out)
    for cand in (p / "report" / TRIALS, p / TRIALS, p):
        if cand.is_file():
            return cand
    raise CompareError(f"{out}: no results ({p / 'report' / TRIALS} not found; a sweep "
                       "writes it in its report stage)")


def load(out: str | Path) -> pd.DataFrame:
    """The validated per-trial table of the sweep in ``out``."""
    try:
        return read_trials(trials_path(out))
    except TrialsError as e:
        raise CompareError(str(e)) from None


def metric_columns(a: pd.DataFrame, b: pd.DataFrame,
                   wanted: Sequence[str] = ()) -> list[str]:
    """Metrics to compare: ``wanted`` (each must be in both), else every metric column the
    two tables share (per-cluster shares left out), in A's column order."""
    common = [c for c in a.columns if c not in TRIAL_KEYS and c in b.columns]
    if wanted:
        missing = [m for m in wanted if m not in common]
        if missing:
            raise CompareError(f"metric(s) {', '.join(missing)} not in both sweeps "
                               f"(shared: {', '.join(common) or 'none'})")
        return list(wanted)
    return [c for c in common if not c.startswith(HIDDEN)]


def compare(a: pd.DataFrame, b: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """One row per (dataset, method, ratio, metric) in both tables.

    Returns:
        Columns dataset, method, ratio, metric, mean_a, mean_b, diff (B - A), t, df, p,
        p_holm (over every row), n_a, n_b, reason (why there is no test, else "").
    """
    keys_a = a[ROW].drop_duplicates()
    rows = keys_a.merge(b[ROW].drop_duplicates(), on=ROW)
    out = []
    for _, key in rows.iterrows():
        sel_a = (a[ROW] == key.values).all(axis=1)
        sel_b = (b[ROW] == key.values).all(axis=1)
        for m in metrics:
            va, vb = a.loc[sel_a, m].to_numpy(float), b.loc[sel_b, m].to_numpy(float)
            w = welch_t(vb, va)          # B - A: B is the first group (w.n), A the second
            out.append({**key.to_dict(), "metric": m,
                        "mean_a": _mean(va), "mean_b": _mean(vb), "diff": w.effect,
                        "t": w.t, "df": w.df, "p": w.p, "n_a": w.n_b, "n_b": w.n,
                        "reason": w.reason})
    table = pd.DataFrame(out, columns=[*ROW, "metric", "mean_a", "mean_b", "diff", "t", "df",
                                       "p", "n_a", "n_b", "reason"])
    table["p_holm"] = holm(table["p"].to_numpy(float)) if len(table) else []
    return table


def only_in(a: pd.DataFrame, b: pd.DataFrame) -> list[tuple[str, str, float]]:
    """(dataset, method, ratio) rows of ``a`` that ``b`` lacks."""
    merged = a[ROW].drop_duplicates().merge(b[ROW].drop_duplicates(), on=ROW, how="left",
                                            indicator=True)
    gone = merged[merged["_merge"] == "left_only"]
    return [(r.dataset, r.method, float(r.ratio)) for r in gone.itertuples()]


def _mean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else math.nan


def _num(x: float, digits: int = 4) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"


def format_lines(table: pd.DataFrame) -> list[str]:
    """One line per comparison row: ``dataset method ratio metric  A mean (n)  B mean (n)
    diff B-A  t  df  p  Holm p`` (the reason instead of the test when there is none)."""
    lines = []
    for r in table.itertuples():
        head = (f"{r.dataset} {r.method} {r.ratio:.2f} {r.metric}: A {_num(r.mean_a)} "
                f"(n={r.n_a})  B {_num(r.mean_b)} (n={r.n_b})  B-A {_num(r.diff)}")
        test = (f"  Welch t {_num(r.t, 3)} df {_num(r.df, 3)} p {_num(r.p, 3)} "
                f"Holm p {_num(r.p_holm, 3)}") if not r.reason else f"  no test: {r.reason}"
        lines.append(head + test)
    return lines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of :func:`main`."""
    p = argparse.ArgumentParser(
        prog="python -m orchestrator.compare",
        description="Per-row differences of two finished sweeps (B - A) with Welch p-values, "
                    "Holm-adjusted over all rows.")
    p.add_argument("out_a", help="sweep A: its experiment.output_dir (or report folder)")
    p.add_argument("out_b", help="sweep B: its experiment.output_dir (or report folder)")
    p.add_argument("--metric", action="append", default=[], metavar="NAME",
                   help="compare only this metric column (repeatable), e.g. fd_cls; "
                        "default: every metric both sweeps have")
    p.add_argument("--csv", metavar="PATH", help="also write the comparison table as CSV")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 printed, 2 nothing to compare)."""
    args = parse_args(argv)
    try:
        a, b = load(args.out_a), load(args.out_b)
        table = compare(a, b, metric_columns(a, b, args.metric))
        if table.empty:
            raise CompareError(f"{args.out_a} and {args.out_b} share no (dataset, method, "
                               "ratio) row")
    except CompareError as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"A: {args.out_a}\nB: {args.out_b}\n"
          f"{len(table)} comparisons (Holm over all of them)")
    print("\n".join(format_lines(table)))
    for name, (x, y) in (("A", (a, b)), ("B", (b, a))):
        for ds, method, ratio in only_in(x, y):
            print(f"only in {name}: {ds} {method} {ratio:.2f}")
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
