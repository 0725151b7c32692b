"""The orchestrator's user-mistake exceptions; this module imports nothing of ours.

Every module may raise these; the CLI turns them into one line and exit code 2.
"""


class ConfigError(ValueError):
    """A mistake in the user's config or command line (exit code 2 in the CLI)."""


class SourceError(ConfigError):
    """A dataset path or file is missing or unreadable (a config mistake, exit code 2)."""
