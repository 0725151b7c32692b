"""The one progress channel of the orchestrator: ``say`` a line, timestamped.

Stages, Ray workers and the CLI report progress only through :func:`say`, so every
line a user sees has the same prefix and reaches the terminal at once (Ray forwards
workers' stdout to the driver). Diagnostics that are not progress (a leftover
placement group removed, a k-means backend fallback) go to ``logging`` at WARNING/INFO:
the CLI shows WARNING and above, everything with ``-v``/``--verbose``.

Loops with many steps use :class:`Progress` / :func:`progress`: a tqdm bar on a
terminal, a few plain lines in a log file (no carriage-return redraws).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")

PREFIX = "prunediff"


def say(fmt: str, *args: Any) -> None:
    """A progress line on stdout: ``[prunediff HH:MM:SS] message`` (``fmt % args``).

    Written to ``sys.stdout`` directly, not through ``print``: Ray Train V2 patches
    ``print`` in its workers to also log each line, which doubled every line a
    ``RayTrainWorker`` said in the driver's log.
    """
    line = f"[{PREFIX} {time.strftime('%H:%M:%S')}] " + (fmt % args if args else fmt)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def is_terminal() -> bool:
    """Whether progress goes to a terminal (tqdm bars) rather than a log file (lines).

    Ray workers' output is a pipe (forwarded to the driver), so workers print lines.
    """
    return sys.stderr.isatty()


class Progress:
    """A stage step's progress: a tqdm bar on a terminal, else at most ``lines`` plain lines.

    In a log file a bar's redraws (carriage returns) become hundreds of lines; here a
    step prints one :func:`say` line at each ``1/lines`` of the way and at the end.
    Use like tqdm's manual mode: ``p = Progress(...); p.update(1) ...; p.close()``.
    """

    def __init__(self, desc: str, total: int, initial: int = 0, disable: bool = False,
                 lines: int = 4, mininterval: float = 15.0):
        self.desc, self.total, self.n = desc, int(total), int(initial)
        self.disable, self._bar = disable, None
        self._t0, self._next = time.time(), 0
        if disable:
            return
        if is_terminal():
            self._bar = tqdm(total=total, initial=initial, desc=desc, mininterval=mininterval)
        else:
            self._marks = [max(1, round(self.total * (i + 1) / lines)) for i in range(lines)]
            self._next = sum(m <= self.n for m in self._marks)

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.disable:
            return
        if self._bar is not None:
            self._bar.update(k)
            return
        if self._next < len(self._marks) and self.n >= self._marks[self._next]:
            while self._next < len(self._marks) and self.n >= self._marks[self._next]:
                self._next += 1
            rate = self.n / max(time.time() - self._t0, 1e-9)
            say("%s: %d/%d (%.2f/s)", self.desc, self.n, self.total, rate)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def progress(iterable: Iterable[T], desc: str, total: int | None = None, initial: int = 0,
             disable: bool = False, lines: int = 4) -> Iterator[T]:
    """Iterate with a :class:`Progress` (``total`` defaults to ``len(iterable)``)."""
    items = list(iterable) if total is None and not hasattr(iterable, "__len__") else iterable
    p = Progress(desc, total if total is not None else len(items), initial, disable, lines)  # type: ignore[arg-type]
    try:
        for x in items:
            yield x
            p.update(1)
    finally:
        p.close()
