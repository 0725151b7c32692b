"""The one progress channel of the orchestrator: ``say`` a line, timestamped.

Stages, Ray workers and the CLI report progress only through :func:`say`, so every
line a user sees has the same prefix and reaches the terminal at once (Ray forwards
workers' stdout to the driver). Diagnostics that are not progress (a leftover
placement group removed, a registry not built yet) go to ``logging`` at WARNING/INFO,
which the CLI's ``--log-level`` controls.
"""

from __future__ import annotations

import time
from typing import Any

PREFIX = "prunediff"


def say(fmt: str, *args: Any) -> None:
    """A progress line on stdout: ``[prunediff HH:MM:SS] message`` (``fmt % args``)."""
    print(f"[{PREFIX} {time.strftime('%H:%M:%S')}] " + (fmt % args if args else fmt), flush=True)
