"""benchmarks.ratio_figure: mean/std over seeds per (dataset, method, ratio), the figure,
and a one-line error for a missing column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.ratio_figure import main, mean_std_table
from eval.analysis.trials_table import check_trials


def _trials() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"dataset": "d", "method": m, "ratio": r, "seed": s, "fd_cls": rng.normal(20, 2),
             "mem_nn_mean_cls": rng.normal(0.5, 0.05)}
            for m, ratios in (("full", [0.0]), ("random", [0.5, 0.9]), ("clustering", [0.5, 0.9]))
            for r in ratios for s in range(3)]
    return check_trials(pd.DataFrame(rows))


def test_mean_std_matches_numpy():
    trials = _trials()
    table = mean_std_table(trials, ["fd_cls", "mem_nn_mean_cls"])
    assert len(table) == 5 and (table["n_seeds"] == 3).all()
    for _, row in table.iterrows():
        vals = trials[(trials.method == row.method) & (trials.ratio == row.ratio)]["fd_cls"].to_numpy()
        assert row["fd_cls_mean"] == pytest.approx(vals.mean())
        assert row["fd_cls_std"] == pytest.approx(vals.std(ddof=1))   # sample std, as the report


def test_figure_and_bad_column(tmp_path, capsys):
    csv = tmp_path / "t.trials.csv"
    _trials().to_csv(csv, index=False)
    out = tmp_path / "fig" / "d.png"
    assert main([str(csv), "--metrics", "fd_cls", "mem_nn_mean_cls", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([str(csv), "--metrics", "fd_effnet", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {csv}: no column 'fd_effnet'") and "\n" not in err
