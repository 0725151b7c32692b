"""Logs a person can read: every output setting and library-warning filter, in one place.

:func:`quiet_output` runs in the driver before Ray starts (``init_ray``); the
environment variables it sets reach the Ray workers of a locally started instance
(they inherit the driver's environment). Each entry says what it changes and why. Seen with
Ray 2.60.0, MLflow 3.17, torch 2.x on the smoke / quickstart runs (2 CPUs).

Progress bars: when stdout is not a terminal (a log file, ``ray job submit``'s log),
Ray Data's per-operator bars are off (hundreds of carriage-return redraws per stage)
and our own loops print a few lines (``orchestrator.progress.Progress``); Tune prints
its status table at most once a minute (:data:`TUNE_REPORT_S`).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from ray.data import DataContext

# Tune's status table: at most once a minute (`tune.CLIReporter(max_report_frequency=)`).
TUNE_REPORT_S = 60

# Environment for the driver and (inherited) the workers.
OUTPUT_ENV = {
    # Ray 2.60's default "new" Tune output ignores a passed CLIReporter (it logs
    # "AIR_VERBOSITY is set, ignoring passed-in ProgressReporter") and prints its own
    # status block every 30 s: the classic reporter honours max_report_frequency.
    "RAY_AIR_NEW_OUTPUT": "0",
}
# Only when stdout is not a terminal: Ray Data's progress bars.
LOG_FILE_ENV = {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}

# (action, message regex, category, module regex, why it is harmless). Empty on purpose:
# importing the driver's stack (orchestrator.pipeline, ray.data, ray.tune, mlflow, models,
# effnet_lite0) under `python -W default` emitted no warning (2026-12-02, Ray 2.60.0,
# MLflow 3.17.2); Tune's "AIR_VERBOSITY is set, ignoring passed-in ProgressReporter"
# (logged by ray/tune/tune.py whenever a reporter is passed under the new output) is
# fixed at its cause by OUTPUT_ENV above. Add an entry
# only with the warning's text from a run log and the reason it is harmless.
WARNING_FILTERS: list[tuple[str, str, type[Warning], str, str]] = []


def install_warning_filters() -> None:
    """Apply :data:`WARNING_FILTERS` in this process."""
    for action, message, category, module, _why in WARNING_FILTERS:
        warnings.filterwarnings(action, message=message, category=category, module=module)


def to_log_file() -> bool:
    """Whether the driver's output goes to a file or pipe rather than a terminal."""
    return not sys.stdout.isatty()


def quiet_output() -> None:
    """Driver: output env (values already set win), Ray Data bars off in log files, filters."""
    env = {**OUTPUT_ENV, **(LOG_FILE_ENV if to_log_file() else {})}
    for k, v in env.items():
        os.environ.setdefault(k, v)
    if os.environ.get("RAY_DATA_DISABLE_PROGRESS_BARS") == "1":
        DataContext.get_current().enable_progress_bars = False
    install_warning_filters()
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
