"""``python -m orchestrator.compare OUT_A OUT_B`` on two small synthetic finished sweeps:
per-row differences, Welch t/df/p against scipy, Holm over the rows against a hand
computation, rows only one sweep has, and the one-line errors (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import REPO
from orchestrator import compare

SEEDS = (0, 1, 2)


def _sweep(root: Path, shift: float, extra_method: str | None = None) -> Path:
    """A finished sweep's output folder: report/trials.csv with 3 seeds per row."""
    rng = np.random.default_rng(int(shift * 100))
    rows = []
    methods = [("full", 0.0), ("random", 0.9), ("clustering", 0.9)]
    if extra_method:
        methods.append((extra_method, 0.5))
    for method, ratio in methods:
        for seed in SEEDS:
            base = {"full": 10.0, "random": 12.0, "clustering": 11.0}.get(method, 20.0)
            rows.append({"dataset": "fmnist", "method": method, "ratio": ratio, "seed": seed,
                         "fd_cls": base + shift + rng.normal(0, 0.3),
                         "f_score_cls": 0.5 - shift / 100 + rng.normal(0, 0.01),
                         "cov_share_0_cls": 0.1})
    (root / "report").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(root / "report" / "trials.csv", index=False)
    return root


@pytest.fixture
def sweeps(tmp_path: Path) -> tuple[Path, Path]:
    return _sweep(tmp_path / "a", 0.0, extra_method="prototypes"), _sweep(tmp_path / "b", 2.0)


def test_rows_match_welch_and_holm_computed_independently(sweeps):
    a_dir, b_dir = sweeps
    a, b = compare.load(a_dir), compare.load(b_dir)
    metrics = compare.metric_columns(a, b)
    assert metrics == ["fd_cls", "f_score_cls"]          # per-cluster shares left out
    table = compare.compare(a, b, metrics)
    assert len(table) == 3 * 2                             # rows in both x metrics
    for r in table.itertuples():
        va = a[(a.method == r.method) & (a.ratio == r.ratio)][r.metric].to_numpy()
        vb = b[(b.method == r.method) & (b.ratio == r.ratio)][r.metric].to_numpy()
        ref = stats.ttest_ind(vb, va, equal_var=False)
        assert r.diff == pytest.approx(vb.mean() - va.mean())
        assert r.t == pytest.approx(ref.statistic) and r.p == pytest.approx(ref.pvalue)
        sa, sb = va.var(ddof=1) / 3, vb.var(ddof=1) / 3
        assert r.df == pytest.approx((sa + sb) ** 2 / (sa ** 2 / 2 + sb ** 2 / 2))
    # Holm by hand: sorted p times (m - i), running max, capped at 1
    p = table["p"].to_numpy()
    order = np.argsort(p)
    m = len(p)
    adj = np.minimum(np.maximum.accumulate([(m - i) * p[j] for i, j in enumerate(order)]), 1)
    expected = np.empty(m)
    expected[order] = adj
    np.testing.assert_allclose(table["p_holm"], expected)
    fd = table[table.metric == "fd_cls"]
    assert (fd["diff"] > 1.0).all() and (fd["p_holm"] < 0.05).all()   # a shift of 2, sd 0.3


@pytest.mark.e2e
def test_command_prints_one_line_per_row_and_the_rows_only_one_has(sweeps, tmp_path):
    a_dir, b_dir = sweeps
    csv = tmp_path / "cmp.csv"
    p = subprocess.run([sys.executable, "-m", "orchestrator.compare", str(a_dir), str(b_dir),
                        "--metric", "fd_cls", "--csv", str(csv)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    rows = [line for line in lines if line.startswith("fmnist ")]
    assert len(rows) == 3 and all(" fd_cls: " in line and "Holm p" in line for line in rows)
    assert rows[0].startswith("fmnist full 0.00 fd_cls: A ")
    assert "only in A: fmnist prototypes 0.50" in lines
    assert "3 comparisons (Holm over all of them)" in lines
    assert len(pd.read_csv(csv)) == 3


def test_one_seed_gives_no_test_and_says_why(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name / "report").mkdir(parents=True)
        (tmp_path / name / "report" / "trials.csv").write_text(
            "dataset,method,ratio,seed,fd_cls\nfmnist,random,0.9,0,1.5\n")
    a, b = compare.load(tmp_path / "a"), compare.load(tmp_path / "b")
    table = compare.compare(a, b, ["fd_cls"])
    (line,) = compare.format_lines(table)
    assert "no test: fewer than 2 values per group" in line and np.isnan(table["p_holm"][0])


def test_seed_counts_are_each_sweeps_own(tmp_path):
    """A with 3 seeds, B with 2: n_a counts A's values, n_b B's (they used to be swapped)."""
    for name, seeds in (("a", (0, 1, 2)), ("b", (0, 1))):
        (tmp_path / name / "report").mkdir(parents=True)
        rows = "".join(f"fmnist,random,0.9,{s},{1.5 + s / 10}\n" for s in seeds)
        (tmp_path / name / "report" / "trials.csv").write_text(
            "dataset,method,ratio,seed,fd_cls\n" + rows)
    table = compare.compare(compare.load(tmp_path / "a"), compare.load(tmp_path / "b"), ["fd_cls"])
    assert (table["n_a"][0], table["n_b"][0]) == (3, 2)
    (line,) = compare.format_lines(table)
    assert "A 1.6 (n=3)  B 1.55 (n=2)" in line


@pytest.mark.parametrize("case", ["missing", "empty", "no_common_row", "bad_metric"])
def test_errors_are_one_line_with_exit_2(sweeps, tmp_path, capsys, case):
    a_dir, b_dir = sweeps
    if case == "missing":
        args, want = [str(tmp_path / "nowhere"), str(b_dir)], "no results"
    elif case == "empty":
        (tmp_path / "e" / "report").mkdir(parents=True)
        (tmp_path / "e" / "report" / "trials.csv").write_text("")
        args, want = [str(a_dir), str(tmp_path / "e")], "cannot read trials CSV"
    elif case == "no_common_row":
        other = tmp_path / "o" / "report"
        other.mkdir(parents=True)
        (other / "trials.csv").write_text("dataset,method,ratio,seed,fd_cls\nx,random,0.5,0,1\n")
        args, want = [str(a_dir), str(tmp_path / "o")], "share no (dataset, method, ratio) row"
    else:
        args, want = [str(a_dir), str(b_dir), "--metric", "fid"], "metric(s) fid not in both"
    assert compare.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and want in err, err


def test_report_folder_or_csv_path_work_too(sweeps):
    a_dir, _ = sweeps
    csv = a_dir / "report" / "trials.csv"
    assert compare.trials_path(a_dir) == compare.trials_path(a_dir / "report") == csv
    assert compare.trials_path(csv) == csv


DOC = REPO / "docs" / "comparing-sweeps.md"


def _fenced(lang: str) -> list[str]:
    """The doc's fenced blocks whose info string is ``lang`` (fences paired in order)."""
    out, current, kind = [], None, None
    for line in DOC.read_text().splitlines(keepends=True):
        if line.startswith("```") and current is None:
            current, kind = [], line[3:].strip()
        elif line.startswith("```"):
            if kind == lang:
                out.append("".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return out


@pytest.mark.e2e
def test_docs_sample_output_is_the_commands_output(tmp_path):
    _sweep(tmp_path / "outputs" / "run-a", 0.0, extra_method="prototypes")
    _sweep(tmp_path / "outputs" / "run-b", 2.0)
    p = subprocess.run([sys.executable, "-m", "orchestrator.compare", "outputs/run-a",
                        "outputs/run-b", "--metric", "fd_cls"], cwd=tmp_path,
                       env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    (sample,) = _fenced("")
    assert p.stdout == sample


def test_docs_mlflow_snippet_groups_two_sweeps(tmp_path, monkeypatch, capsys):
    from orchestrator.config.schema import Trial
    from orchestrator.tracking import MlflowReporter
    from orchestrator.training.records import TrialFiles, TrialResult

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for config_hash, fd in (("hash-a", 10.0), ("hash-b", 12.0)):
        reporter = MlflowReporter(uri, "quickstart", str(tmp_path / "art"), config_hash, "s")
        for seed in SEEDS:
            trial = Trial("fmnist", "random", 0.9, seed)
            reporter.log_trial(TrialResult(
                key=f"{config_hash}/{seed}", trial=trial, params={},
                metrics={"fd_cls": fd + seed}, loss_curve=[], timing={}, resumed_from_step=0,
                world_size=1, finished_at=0.0, files=TrialFiles(grid="", manifest="")), {})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    (code,) = _fenced("python")
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102
    table = namespace["table"]
    assert table.loc[("hash-a", "random", "0.9"), "mean"] == pytest.approx(11.0)
    assert table.loc[("hash-b", "random", "0.9"), "count"] == 3
