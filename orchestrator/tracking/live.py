"""Live tracking: a trial's MLflow run opens when the trial starts and its loss is logged
at each report, so the MLflow UI shows a sweep while it runs.

:class:`LiveTrialRuns` holds the logic and imports no Ray. Each executor calls it as its
trials move (:mod:`orchestrator.runtime.executor`): the Ray executor through a Ray Tune
callback (``runtime.trials.TuneLiveCallback``, in the driver beside the Tune loop), the
local executor directly. A trial's run is created under the sweep's parent run (tags
``prunediff.trial_key``, ``prunediff.final = false`` and the provenance tags), logs
``train_loss`` at ``step`` for every report that carries both, and is marked FINISHED
(still ``final = false``) when the trial ends or FAILED when it errs. The report stage
later completes the same run (:meth:`orchestrator.tracking.runs.MlflowReporter.log_trial`,
found by the trial key).

Tracking must never stop a sweep: an MLflow error here is logged as one warning per
trial and the logging carries on. The Tuner pickles its run config (``tuner.pkl``), so
the object keeps only plain fields and opens its client on first use.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from orchestrator.config.schema import Trial
from orchestrator.tracking.runs import FINAL, MlflowReporter, log_new_params, open_trial_run
from orchestrator.tracking.runs import trial_params
from orchestrator.tracking.server import tracking_client
from orchestrator.training.records import TrialSpec

log = logging.getLogger(__name__)


class LiveTrialRuns:
    """Opens each trial's MLflow run at its start and logs its loss as it reports.

    Args:
        tracking_uri, experiment_id, parent_id: where the runs go (the sweep's parent run).
        tags: tags of every trial run (:func:`orchestrator.version.provenance_tags`).
        trials: trial run name (the spec's ``run_name``) -> ``{"key": trial key,
            "trial": [dataset, method, ratio, seed]}``.

    Every method takes the trial's run name and a ``token`` naming this attempt of it
    (Tune's trial id; the run name on the local executor): a new token reopens the run.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_id: str,
                 tags: dict[str, str], trials: dict[str, dict[str, Any]]) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_id = parent_id
        self.tags = dict(tags)
        self.trials = trials
        self.runs: dict[str, str] = {}     # token -> MLflow run id
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

    def _guard(self, token: str, what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - tracking never fails the sweep
            if token not in self._warned:
                self._warned.add(token)
                log.warning("live MLflow logging of trial %s (%s) failed: %s", token, what, e)

    def _run_id(self, name: str | None, token: str) -> str | None:
        if token not in self.runs:
            entry = self.trials.get(name or "")
            if entry is None:              # not a trial of this sweep
                return None
            grid = Trial(*entry["trial"])
            rid = open_trial_run(self.client, self.experiment_id, self.parent_id, entry["key"],
                                 grid, {**self.tags, FINAL: "false"})
            log_new_params(self.client, rid, trial_params(grid))
            self.runs[token] = rid
        return self.runs[token]

    def start(self, name: str | None, token: str) -> None:
        """Open (or reopen) the trial's run: RUNNING."""
        self._guard(token, "start", lambda: self._run_id(name, token))

    def result(self, name: str | None, token: str, metrics: dict[str, Any]) -> None:
        """Log ``train_loss`` at ``step`` (reports without both are ignored)."""
        if "step" not in metrics or "loss" not in metrics:
            return

        def log_loss() -> None:
            rid = self._run_id(name, token)
            if rid is not None:
                self.client.log_metric(rid, "train_loss", float(metrics["loss"]),
                                       step=int(metrics["step"]))
        self._guard(token, "result", log_loss)

    def end(self, name: str | None, token: str, status: str) -> None:
        """The trial ended: ``FINISHED`` (still ``final = false`` until the report logs it)
        or ``FAILED``."""
        def close() -> None:
            rid = self._run_id(name, token)
            if rid is not None and self.client.get_run(rid).data.tags.get(FINAL) != "true":
                self.client.set_terminated(rid, status)
        self._guard(token, status.lower(), close)


def live_logger(reporter: MlflowReporter, specs: Sequence[TrialSpec]) -> LiveTrialRuns:
    """The :class:`LiveTrialRuns` that writes under ``reporter``'s parent run."""
    trials = {s.run_name: {"key": s.key, "trial": [s.trial.dataset, s.trial.method,
                                                    s.trial.ratio, s.trial.seed]}
              for s in specs}
    return LiveTrialRuns(reporter.tracking_uri, reporter.experiment_id, reporter.parent_id,
                         reporter.tags, trials)
