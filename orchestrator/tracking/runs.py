"""A sweep's MLflow runs: one parent run per config, one nested run per trial.

Reruns reuse the parent run of the same config (tags ``prunediff.config_hash`` and
``prunediff.role = sweep``) and a trial's run by its tag ``prunediff.trial_key``, so a
resumed sweep logs each trial once. A trial's run may be opened before the trial ends by
the live logger (:mod:`orchestrator.tracking.live`, tag ``prunediff.final = false``);
:meth:`MlflowReporter.log_trial` completes that same run with the final metrics and files.

Every run carries :func:`orchestrator.version.provenance_tags`: ``prunediff.version``,
``prunediff.git_commit`` (in a checkout) and ``prunediff.config_hash``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from orchestrator.config.schema import Config, Trial
from orchestrator.progress import say
from orchestrator.tracking.server import (find_run, mlflow_ui_command, open_experiment,
                                          tracking_client)
from orchestrator.tracking.view import runs_url, set_runs_view
from orchestrator.training.records import TrialResult
from orchestrator.version import provenance_tags

ROLE, KEY, FINAL, PARENT = ("prunediff.role", "prunediff.trial_key", "prunediff.final",
                            "mlflow.parentRunId")
BATCH = 900   # MLflow's log_batch takes at most 1000 metrics


def trial_params(trial: Trial, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The params a trial's run shows: the grid point, then the trial's own params."""
    return {"dataset": trial.dataset, "method": trial.method, "ratio": trial.ratio,
            "seed": trial.seed, **(extra or {})}


def log_new_params(client: Any, run_id: str, params: dict[str, Any]) -> None:
    """Log the params the run does not have yet (MLflow refuses to change a param)."""
    from mlflow.entities import Param  # lazy: mlflow ~4 s, see server.tracking_client

    have = client.get_run(run_id).data.params
    new = [Param(k, str(v)) for k, v in params.items() if k not in have]
    for i in range(0, len(new), 100):
        client.log_batch(run_id, params=new[i:i + 100])


def open_trial_run(client: Any, experiment_id: str, parent_id: str, key: str, trial: Trial,
                   tags: dict[str, str]) -> str:
    """The run of trial ``key`` under ``parent_id``: the existing one (RUNNING again unless
    its final metrics are logged), else a new one with ``tags``; returns its id."""
    found = find_run(client, experiment_id, {PARENT: parent_id, KEY: key})
    if found is not None:
        if found.info.status != "FINISHED" or found.data.tags.get(FINAL) == "false":
            client.update_run(found.info.run_id, status="RUNNING")
        return found.info.run_id
    run = client.create_run(experiment_id, run_name=trial.name,
                            tags={**tags, PARENT: parent_id, ROLE: "trial", KEY: key})
    return run.info.run_id


class MlflowReporter:
    """Parent run per sweep (one per config hash), one nested run per trial.

    ``reuse_parent=False`` (``--fresh``) starts a new parent run.
    """

    def __init__(self, tracking_uri: str, experiment_name: str, artifact_location: str | None,
                 config_hash: str, sweep_name: str, reuse_parent: bool = True):
        self.tracking_uri = tracking_uri
        self.client = tracking_client(tracking_uri)
        self.experiment_id = open_experiment(self.client, experiment_name, artifact_location)
        self.config_hash = config_hash
        self.tags = provenance_tags(config_hash)
        found = find_run(self.client, self.experiment_id,
                         {"prunediff.config_hash": config_hash, ROLE: "sweep"}) \
            if reuse_parent else None
        if found is not None:
            self.parent_id = found.info.run_id
            for k, v in self.tags.items():      # a parent logged before these tags existed
                if k not in found.data.tags:
                    self.client.set_tag(self.parent_id, k, v)
        else:
            self.parent_id = self.client.create_run(
                self.experiment_id, run_name=sweep_name,
                tags={**self.tags, ROLE: "sweep"}).info.run_id

    def logged_trials(self) -> set[str]:
        """Trial keys whose run under this parent is complete (final metrics logged)."""
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{PARENT}` = '{self.parent_id}' and attributes.status = 'FINISHED'",
            max_results=5000)
        return {r.data.tags.get(KEY) for r in runs if r.data.tags.get(FINAL) != "false"}

    def trial_run(self, key: str, trial: Trial) -> str:
        """The run id of trial ``key`` (the live logger's run when there is one)."""
        return open_trial_run(self.client, self.experiment_id, self.parent_id, key, trial,
                              self.tags)

    def log_trial(self, result: TrialResult, files: dict[str, str]) -> str:
        """Complete the trial's run: params, final metrics, the loss curve's steps not logged
        live, artifact files (local paths); FINISHED with tag ``prunediff.final = true``."""
        from mlflow.entities import Metric  # lazy: mlflow ~4 s, see server.tracking_client

        rid = self.trial_run(result.key, result.trial)
        log_new_params(self.client, rid, trial_params(result.trial, result.params))
        now = int(time.time() * 1000)
        live = {int(m.step) for m in self.client.get_metric_history(rid, "train_loss")}
        metrics = [Metric(k, float(v), now, 0) for k, v in result.metrics.items()
                   if v is not None and np.isfinite(v)]
        metrics += [Metric("train_loss", float(loss), now, int(step))
                    for step, loss in result.loss_curve if int(step) not in live]
        for i in range(0, len(metrics), BATCH):
            self.client.log_batch(rid, metrics=metrics[i:i + BATCH])
        for path in files.values():
            if path and os.path.exists(path):
                self.client.log_artifact(rid, path)
        self.client.set_tag(rid, FINAL, "true")
        self.client.set_terminated(rid, "FINISHED")
        return rid

    def log_parent(self, params: dict[str, Any], files: Sequence[str], status: str,
                   metrics: dict[str, float] | None = None) -> None:
        """Params, metrics (e.g. the scores' reliability) and artifacts of the sweep run
        (table, plots, resolved config)."""
        log_new_params(self.client, self.parent_id, params)
        for name, value in (metrics or {}).items():
            self.client.log_metric(self.parent_id, name, value)
        for path in files:
            self.client.log_artifact(self.parent_id, path)
        self.client.set_terminated(self.parent_id, status)


def sweep_reporter(cfg: Config, fresh: bool = False) -> MlflowReporter:
    """The :class:`MlflowReporter` of ``cfg``'s sweep (a new parent run when ``fresh``)."""
    return MlflowReporter(cfg.mlflow.tracking_uri, cfg.mlflow.experiment_name,
                          cfg.mlflow.artifact_location, cfg.config_hash(),
                          f"{cfg.experiment.name}-sweep", reuse_parent=not fresh)


@dataclass
class SweepReport:
    """What a sweep's report hands to MLflow (built by ``stages/report.py:build_report``).

    ``trial_files(result)``: a trial's artifact files as local paths (samples grid, subset
    manifest, loss curve plot), made only for the trials MLflow lacks; ``files``: the
    parent run's artifacts (table, per-seed trials, verdicts, analysis, config, plots);
    ``view_columns``: the metrics the runs view shows.
    """

    results: Sequence[TrialResult]
    trial_files: Callable[[TrialResult], dict[str, str]]
    params: dict[str, Any]
    files: list[str]
    view_columns: list[str]


def log_report(reporter: MlflowReporter, report: SweepReport, failed: bool,
               metrics: dict[str, float] | None = None) -> None:
    """Log a finished sweep: complete every trial run not yet logged (the live logger's
    or a new one), then the parent run's params, ``metrics`` (the scores' reliability) and
    files, FAILED when a trial ``failed``; set the runs view and say how to open it."""
    logged = reporter.logged_trials()
    for res in report.results:
        if res.key not in logged:
            reporter.log_trial(res, report.trial_files(res))
    reporter.log_parent(report.params, report.files, "FAILED" if failed else "FINISHED",
                        metrics or {})
    view = set_runs_view(reporter.client, reporter.experiment_id, report.view_columns)
    say("MLflow trials table: run `%s`, open %s", mlflow_ui_command(reporter.tracking_uri),
        runs_url(reporter.experiment_id, view))
