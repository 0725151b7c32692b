"""The orchestrator's user-mistake exceptions; this module imports nothing of ours.

Every module may raise these; the CLI turns them into one line and exit code 2
(:class:`ConfigError`) or 1 (:class:`RunError`).
"""


class ConfigError(ValueError):
    """A mistake in the user's config or command line (exit code 2 in the CLI)."""


class SourceError(ConfigError):
    """A dataset path or file is missing or unreadable (a config mistake, exit code 2)."""


class RunError(RuntimeError):
    """The run cannot start or go on for a reason outside the config: the output
    directory is in use, the MLflow server is down, the disk is full. The CLI prints
    one line and exits with code 1 (the traceback only with ``-v``)."""


class OutputLocked(RunError):
    """Another live run holds the output directory's lock (``storage/lock.py``)."""


class TrackingUnavailable(RunError):
    """The MLflow tracking server does not answer (checked before any work)."""
