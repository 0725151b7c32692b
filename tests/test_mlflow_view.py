"""The MLflow experiment opens on its runs (experiment kind tag) and the shared runs view
lists the trial runs with the comparison's columns (orchestrator/tracking/view.py)."""

from __future__ import annotations

import json

from orchestrator.config.schema import Trial
from orchestrator.tracking import MlflowReporter
from orchestrator.tracking import view as mlflow_view
from orchestrator.training.records import TrialFiles, TrialResult


def _result(method: str, fd: float) -> TrialResult:
    trial = Trial("fmnist", method, 0.5, 0)
    return TrialResult(key=f"trial/{method}", trial=trial, params={"n_train": 200},
                       metrics={"fd_pixels": fd, "precision": 0.5}, loss_curve=[[5, 1.0]],
                       timing={}, resumed_from_step=0, world_size=1, finished_at=0.0,
                       files=TrialFiles(grid="", manifest=""))


def test_experiment_kind_tag_and_shared_runs_view(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    reporter = MlflowReporter(uri, "kind-test", str(tmp_path / "artifacts"), "abc", "sweep")
    for method, fd in (("random", 3.0), ("el2n", 2.0)):
        reporter.log_trial(_result(method, fd), {})
    key = mlflow_view.set_runs_view(reporter.client, reporter.experiment_id, ["fd_pixels", "precision"])

    tags = reporter.client.get_experiment(reporter.experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(tags[f"mlflow.sharedViewState.{key}"])
    assert view["selectedColumns"][-2:] == ["metrics.`fd_pixels`", "metrics.`precision`"]
    assert "params.`method`" in view["selectedColumns"]
    # The view's filter is valid MLflow search syntax and selects exactly the trial runs.
    runs = reporter.client.search_runs([reporter.experiment_id], view["searchFilter"])
    assert sorted(r.data.tags["prunediff.trial_key"] for r in runs) == ["trial/el2n", "trial/random"]
    assert mlflow_view.runs_url(reporter.experiment_id, key, port=5123) == (
        f"http://127.0.0.1:5123/#/experiments/{reporter.experiment_id}/runs?viewStateShareKey={key}")

    # An existing experiment (created before this tag existed) gets it on the next report.
    reporter.client.delete_experiment_tag(reporter.experiment_id, "mlflow.experimentKind")
    again = MlflowReporter(uri, "kind-test", None, "abc", "sweep")
    assert again.client.get_experiment(again.experiment_id).tags["mlflow.experimentKind"] \
        == "custom_model_development"
