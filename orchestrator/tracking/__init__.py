"""MLflow tracking in one place: the server check, the experiment, the sweep's parent and
trial runs, live logging while the sweep runs, and the UI's runs view.

- :mod:`~orchestrator.tracking.server`: ``check_tracking_server`` (the preflight check),
  ``mlflow_ui_command``, ``open_experiment``, ``artifact_location_uri``, ``find_run``.
- :mod:`~orchestrator.tracking.runs`: ``MlflowReporter`` (parent run per config hash, one
  nested run per trial), ``sweep_reporter(cfg, fresh)``, ``log_report`` (a finished
  sweep's ``SweepReport``: the trial runs MLflow lacks, the parent run, the runs view).
- :mod:`~orchestrator.tracking.live`: ``LiveTrialRuns`` (``live_logger``), which opens a
  trial's run when it starts and logs its loss as it reports; each executor feeds it
  (the Ray executor through a Tune callback, ``runtime.trials.TuneLiveCallback``).
- :mod:`~orchestrator.tracking.view`: the experiment-kind tag and the shared runs view.

Every run is tagged with :func:`orchestrator.version.provenance_tags` (version, git
commit, config hash). The report stage (``stages/report.py``) only builds tables and plots;
the pipeline hands its ``SweepReport`` to ``log_report``.
"""

from orchestrator.tracking.runs import MlflowReporter, SweepReport, log_report, sweep_reporter
from orchestrator.tracking.server import (artifact_location_uri, check_tracking_server,
                                          find_run, mlflow_ui_command, open_experiment)
from orchestrator.tracking.view import runs_url, set_runs_view, tag_experiment

__all__ = ["MlflowReporter", "SweepReport", "artifact_location_uri", "check_tracking_server",
           "find_run", "log_report", "mlflow_ui_command", "open_experiment", "runs_url", "set_runs_view", "sweep_reporter",
           "tag_experiment"]
