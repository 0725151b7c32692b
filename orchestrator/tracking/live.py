"""Live tracking: a trial's MLflow run opens when Ray Tune starts the trial and its loss is
logged at each report, so the MLflow UI shows a sweep while it runs.

:class:`LiveTrialLogger` is a Ray Tune callback (it runs in the driver, beside the Tune
loop). It creates the trial's run under the sweep's parent run (tags ``prunediff.trial_key``,
``prunediff.final = false`` and the provenance tags), logs ``train_loss`` at ``step`` for
every result that carries both, and marks the run FINISHED (still ``final = false``) when
the trial ends or FAILED when it errs. The report stage later completes the same run
(:meth:`orchestrator.tracking.runs.MlflowReporter.log_trial`, found by the trial key).

Tracking must never stop a sweep: an MLflow error here is logged as one warning per
trial and the callback carries on. The Tuner pickles its run config (``tuner.pkl``), so
the callback keeps only plain fields and opens its client on first use.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from ray.tune import Callback

from orchestrator.config.schema import Trial
from orchestrator.tracking.runs import FINAL, MlflowReporter, log_new_params, open_trial_run
from orchestrator.tracking.runs import trial_params
from orchestrator.tracking.server import tracking_client
from orchestrator.training.records import TrialSpec

log = logging.getLogger(__name__)


class LiveTrialLogger(Callback):
    """Opens each trial's MLflow run at its start and logs its loss as it reports.

    Args:
        tracking_uri, experiment_id, parent_id: where the runs go (the sweep's parent run).
        tags: tags of every trial run (:func:`orchestrator.version.provenance_tags`).
        trials: Tune trial name (the spec's ``run_name``) -> ``{"key": trial key,
            "trial": [dataset, method, ratio, seed]}``.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_id: str,
                 tags: dict[str, str], trials: dict[str, dict[str, Any]]) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_id = parent_id
        self.tags = dict(tags)
        self.trials = trials
        self.runs: dict[str, str] = {}     # Tune trial id -> MLflow run id
        self._client: Any = None
        self._warned: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None           # a tracking store (sqlite engine) does not pickle
        return state

    @property
    def client(self) -> Any:
        """The MLflow client, opened on first use."""
        if self._client is None:
            self._client = tracking_client(self.tracking_uri)
        return self._client

    def _entry(self, trial: Any) -> tuple[str, Trial] | None:
        name = (getattr(trial, "config", None) or {}).get("trial", {}).get("name")
        entry = self.trials.get(name)
        return (entry["key"], Trial(*entry["trial"])) if entry else None

    def _guard(self, trial: Any, what: str, fn: Any) -> None:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - tracking never fails the sweep
            tid = str(getattr(trial, "trial_id", trial))
            if tid not in self._warned:
                self._warned.add(tid)
                log.warning("live MLflow logging of trial %s (%s) failed: %s", tid, what, e)

    def _run_id(self, trial: Any) -> str | None:
        tid = str(trial.trial_id)
        if tid not in self.runs:
            entry = self._entry(trial)
            if entry is None:
                return None
            key, grid = entry
            rid = open_trial_run(self.client, self.experiment_id, self.parent_id, key, grid,
                                 {**self.tags, FINAL: "false"})
            log_new_params(self.client, rid, trial_params(grid))
            self.runs[tid] = rid
        return self.runs[tid]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Open (or reopen) the trial's run."""
        self._guard(trial, "start", lambda: self._run_id(trial))

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A restored trial runs again: its run shows RUNNING."""
        self.on_trial_start(iteration, trials, trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        """Log ``train_loss`` at ``step`` (results without both are ignored)."""
        if "step" not in result or "loss" not in result:
            return

        def log() -> None:
            rid = self._run_id(trial)
            if rid is not None:
                self.client.log_metric(rid, "train_loss", float(result["loss"]),
                                       step=int(result["step"]))
        self._guard(trial, "result", log)

    def _end(self, trial: Any, status: str) -> None:
        def end() -> None:
            rid = self._run_id(trial)
            if rid is not None and self.client.get_run(rid).data.tags.get(FINAL) != "true":
                self.client.set_terminated(rid, status)
        self._guard(trial, status.lower(), end)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """The trial ended: FINISHED, still ``final = false`` until the report logs it."""
        self._end(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """The trial failed for good: FAILED."""
        self._end(trial, "FAILED")


def live_logger(reporter: MlflowReporter, specs: Sequence[TrialSpec]) -> LiveTrialLogger:
    """The :class:`LiveTrialLogger` that writes under ``reporter``'s parent run."""
    trials = {s.run_name: {"key": s.key, "trial": [s.trial.dataset, s.trial.method,
                                                    s.trial.ratio, s.trial.seed]}
              for s in specs}
    return LiveTrialLogger(reporter.tracking_uri, reporter.experiment_id, reporter.parent_id,
                           reporter.tags, trials)
