"""The trial plan (orchestrator/config/plan.py): the grid enumerated once, read by the score
stage, the sweep's specs and the dry-run."""

from __future__ import annotations

from pathlib import Path

from conftest import minimal_config

from orchestrator.config import config_from_dict
from orchestrator.config.plan import TrialPlan


def _cfg(tmp_path: Path, **sections):
    raw = minimal_config(**sections)
    raw["experiment"] = {"name": "t", "seeds": [0, 1], "output_dir": str(tmp_path / "out")}
    raw["pruning"]["ratios"] = [0.25, 0.9]
    return config_from_dict(raw, base_dir=tmp_path)


def test_plan_orders_baseline_then_method_by_ratio_per_seed(tmp_path):
    plan = TrialPlan.from_config(_cfg(tmp_path))
    rows = [(t.method, t.ratio, t.seed) for t in plan]
    assert rows == [("full", 0.0, 0), ("random", 0.25, 0), ("random", 0.9, 0),
                    ("clustering", 0.25, 0), ("clustering", 0.9, 0),
                    ("full", 0.0, 1), ("random", 0.25, 1), ("random", 0.9, 1),
                    ("clustering", 0.25, 1), ("clustering", 0.9, 1)]
    assert len(plan) == 10 and [t.seed for t in plan.baselines()] == [0, 1]


def test_scoring_jobs_cover_exactly_the_pruned_trials(tmp_path):
    plan = TrialPlan.from_config(_cfg(tmp_path))
    from_jobs = {(j.dataset, j.method.label, r, j.seed) for j in plan.jobs for r in j.ratios}
    pruned = {k for k in plan.subset_keys() if k[1] != "full"}
    assert from_jobs == pruned
    assert len(plan.jobs) == 4   # 2 seeds x 1 dataset x 2 methods, each at both ratios


def test_no_baseline_no_full_trials(tmp_path):
    raw = minimal_config()
    raw["pruning"]["baseline"] = False
    plan = TrialPlan.from_config(config_from_dict(raw, base_dir=tmp_path))
    assert plan.baselines() == [] and all(t.method != "full" for t in plan)
    assert len(plan) == 2   # 1 seed x 2 methods x 1 ratio
