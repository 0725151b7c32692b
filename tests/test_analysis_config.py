"""The analysis: config section, the results-page CLI, copy rate and score reliability."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, minimal_config
from eval.analysis import copy_rate, reliability_table, resolve_plan, split_half_rho
from eval.analysis.plan import CLUSTERING_DEFAULTS, DEFAULTS, SPACE_SHORT
from eval.analysis.report import main, plan_from_config, read_config
from orchestrator.config import ConfigError, config_from_dict, load_config
from orchestrator.config.schema import AnalysisConfig, as_mapping
from tests.page_helpers import regenerate

EXPERIMENTS = sorted((REPO / "experiments").glob("*.yaml"))


def test_defaults_are_one_definition():
    assert as_mapping(AnalysisConfig()) == {k: list(v) if isinstance(v, tuple) else v
                                            for k, v in DEFAULTS.items()}


def test_space_suffixes_and_clustering_defaults_match_their_registries():
    from models import EMBEDDERS
    from pruning.clustering import ClusteringPruner

    assert SPACE_SHORT == {name: cls.short for name, cls in EMBEDDERS.items()}
    assert CLUSTERING_DEFAULTS == {k: ClusteringPruner.PARAMS[k].default for k in CLUSTERING_DEFAULTS}


@pytest.mark.parametrize("override, message", [
    ("analysis.margin=0", "analysis.margin: must be in"),
    ("analysis.alpha=1.5", "analysis.alpha: must be in"),
    ("analysis.power=0", "analysis.power: must be in"),
    ("analysis.high_ratio=1", "analysis.high_ratio: must be in"),
    ("analysis.metrics=[]", "analysis.metrics: needs at least one"),
    ("analysis.metrics=[fd, fd]", "analysis.metrics: duplicate"),
    ("analysis.space=clip", "analysis.space: 'clip' is not one of eval.embedders"),
    ("analysis.contestant=nope", "analysis.contestant: no pruning method labelled 'nope'"),
    ("analysis.balanced=nope", "analysis.balanced: no pruning method labelled 'nope'"),
    ("analysis.bogus=1", "analysis.bogus: unknown key"),
    ("analysis.margin=wide", "analysis.margin: expected a number"),
])
def test_bad_analysis_sections_name_their_key(override, message, tmp_path):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        config_from_dict(minimal_config(), [override], base_dir=tmp_path, check=False)


def test_the_section_loads_and_counts_in_the_config_hash(tmp_path):
    cfg = config_from_dict(minimal_config(analysis={"margin": 0.2, "contestant": "clustering"}),
                           base_dir=tmp_path, check=False)
    assert cfg.analysis.margin == 0.2 and cfg.analysis.contestant == "clustering"
    base = config_from_dict(minimal_config(), base_dir=tmp_path, check=False)
    assert base.analysis == AnalysisConfig()
    assert cfg.config_hash() != base.config_hash()      # a changed analysis is a new sweep run


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_the_cli_resolves_every_experiment_as_the_loader_does(path, tmp_path):
    cfg = load_config(path, base_dir=tmp_path, check=False)
    via_loader = resolve_plan(as_mapping(cfg.analysis), cfg.eval.primary,
                              cfg.to_dict()["pruning"]["methods"], cfg.eval.embedders)
    assert plan_from_config(read_config(path)) == via_loader


def test_reproduce_contestant_is_the_code_default(tmp_path):
    plan = plan_from_config(read_config(REPO / "experiments" / "reproduce.yaml"))
    assert plan.contestant == "clustering_farthest"
    assert set(plan.exploratory) == {"clustering_nearest"} and plan.balanced is None
    assert plan.metrics == ("f_score_cls", "fd_cls") and plan.circular == ()
    params = plan.params()
    assert params["analysis.margin"] == "0.1" and params["analysis.circular"] == "none"


# ---- the results page -------------------------------------------------------------------

def _write_csv(path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for s in range(4):
        rows.append({"method": "full", "ratio": 0.0, "seed": s, "fd_cls": 40 + s, "f_score_cls": 0.5,
                     "mem_nn_mean_cls": 1.0})
        for m, shift in (("random", 0.0), ("clustering_farthest", -2.0)):
            for r in (0.5, 0.9):
                rows.append({"method": m, "ratio": r, "seed": s,
                             "fd_cls": 40 + s + shift + rng.normal(0, 0.2),
                             "f_score_cls": 0.5 + rng.normal(0, 0.01),
                             "mem_nn_mean_cls": 1.0 - r * 0.1 + rng.normal(0, 0.01)})
    pd.DataFrame(rows).to_csv(path, index=False)


def _write_config(tmp_path: Path) -> Path:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({
        "eval": {"embedders": ["classifier", "effnet_lite0"], "primary": "classifier"},
        "pruning": {"methods": ["random", {"name": "clustering", "label": "clustering_farthest"}]}}))
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({"extends": "base.yaml", "analysis": {"high_ratio": 0.5}}))
    return cfg


def test_results_page_from_a_csv(tmp_path, capsys):
    csv, out, rows = tmp_path / "sweep.trials.csv", tmp_path / "docs" / "results.md", tmp_path / "rows.csv"
    _write_csv(csv)
    cfg = _write_config(tmp_path)
    assert main([str(csv), "--config", str(cfg), "--out", str(out), "--rows-out", str(rows)]) == 0
    page = out.read_text()
    for text in ("# Results", "**The plan**",
                 "| (a) equivalence margin | ±10% of the full-data mean (TOST) |",
                 "effect A − B [95% CI]", "p (Holm)", "MDE", "(a) fd_cls", "(b) fd_cls",
                 "(d) mem_nn_mean_cls", "not measured", "do not edit by hand"):
        assert text in page, text
    table = pd.read_csv(rows)
    tested = table[table["verdict"] != "not measured"]
    assert set(tested["verdict"]) <= {"holds", "does not hold", "inconclusive"}
    assert tested[["effect", "ci_lo", "ci_hi", "p", "df", "p_holm", "mde"]].notna().all().all()
    b = tested[(tested.claim == "b") & (tested.metric == "fd_cls")]
    assert (b.verdict == "holds").all() and (b.df == 3).all()
    # generated, not hand-written: the same inputs give the same page
    assert main([str(csv), "--config", str(cfg), "--out", str(out)]) == 0
    assert out.read_text() == page


def test_results_page_errors_are_one_line(tmp_path, capsys):
    csv = tmp_path / "t.csv"
    _write_csv(csv)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"analysis": {"alpha": 2}}))
    assert main([str(csv), "--config", str(bad), "--out", str(tmp_path / "o.md")]) == 2
    assert "analysis.alpha" in capsys.readouterr().err
    assert main([str(tmp_path / "none.csv"), "--config", str(bad), "--out", str(tmp_path / "o.md")]) == 2


def test_results_page_is_the_one_generated_from_the_committed_csvs(tmp_path, monkeypatch):
    """docs/results.md is exactly what its own command line writes today (regenerate it with
    that command when a CSV, a config's analysis: section or the analysis code changes)."""
    committed, page = regenerate("docs/results.md", "eval.analysis.report", main, tmp_path,
                                 monkeypatch)
    assert "clustering_farthest" in page and "kl_uniform[nn_effnet]" in page
    assert page == committed


@pytest.mark.e2e
def test_analysis_package_is_pure():
    code = ("import sys, eval.analysis, eval.analysis.report; "
            "bad = {m.split('.')[0] for m in sys.modules} "
            "& {'ray', 'mlflow', 'orchestrator', 'models', 'torch'}; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# ---- copy rate and reliability ----------------------------------------------------------

def test_copy_rate_by_hand():
    # the 25% quantile of 1..5 is 2; samples strictly nearer than 2: 0.5 and 1.9
    assert copy_rate(np.array([0.5, 1.9, 2.0, 3.0]), np.arange(1.0, 6.0), quantile=0.25) == 0.5
    with pytest.raises(ValueError, match="quantile"):
        copy_rate(np.ones(2), np.ones(2), quantile=1.0)


def test_copy_rate_by_brute_force():
    rng = np.random.default_rng(3)
    train, fake = rng.normal(size=(40, 5)), rng.normal(size=(30, 5))
    fake[:6] = train[:6] + 1e-3                                     # six near-copies
    d_tt = np.array([min(np.linalg.norm(train[i] - train[j]) for j in range(40) if j != i)
                     for i in range(40)])
    d_ft = np.array([min(np.linalg.norm(f - t) for t in train) for f in fake])
    thr = np.sort(d_tt)[1] + 0.95 * (np.sort(d_tt)[2] - np.sort(d_tt)[1])   # 5% of 40: index 1.95
    assert copy_rate(d_ft, d_tt) == pytest.approx(np.mean([d < thr for d in d_ft]))
    assert copy_rate(d_ft, d_tt) >= 6 / 30


def test_split_half_rho_by_hand():
    # ranks (1..5) and (1, 2, 3.5, 5, 3.5): 8 / sqrt(10 * 9.5)
    assert split_half_rho([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / np.sqrt(95))
    assert np.isnan(split_half_rho([1, 1, 1], [1, 2, 3]))


def test_reliability_table_flags_methods_under_half():
    t = reliability_table({"el2n": 0.96, "moso": 0.3, "monotonicity": 0.55},
                          {"el2n": 0.9, "monotonicity": 0.4})
    flags = dict(zip(t.method, t.flag))
    assert flags == {"el2n": "", "moso": "unreliable (rho < 0.5)",
                     "monotonicity": "unreliable (rho < 0.5)"}
    assert reliability_table({"x": float("nan")}).flag.tolist() == ["not measured"]


def test_report_stage_section_on_synthetic_trials(tmp_path):
    from orchestrator.stages.report import analysis_section

    raw = minimal_config()
    raw["eval"] = {"embedders": ["pixels"], "metrics": ["fd"]}
    raw["pruning"]["methods"][1]["label"] = "clustering_farthest"
    cfg = config_from_dict(raw, base_dir=tmp_path, check=False)
    df = pd.read_csv(_csv_for(tmp_path)).assign(dataset="digits")
    df.columns = [c.replace("_cls", "_pixels") for c in df.columns]
    md, plan = analysis_section(cfg, df)
    assert plan.contestant == "clustering_farthest" and plan.circular == ("clustering_farthest",)
    assert "(b) fd_pixels" in md and "†" in md
    assert dataclasses.asdict(plan)["margin"] == 0.1


def _csv_for(tmp_path: Path) -> Path:
    p = tmp_path / "syn.csv"
    _write_csv(p)
    return p
