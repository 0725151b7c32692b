"""The ``prunediff`` console command (``setup.cfg``: ``[options.entry_points]``).

- ``prunediff CONFIG [--set k=v ...] [--until STAGE] [--dry-run] [--fresh] [-v]`` is exactly
  ``python -m orchestrator.run`` (same arguments, output and exit codes).
- ``prunediff compare OUT_A OUT_B [--metric NAME] [--csv PATH]`` is
  ``python -m orchestrator.compare``.
- ``prunediff --version`` prints the version and the git commit of a checkout.

A config file literally named ``compare`` would be read as the subcommand; pass it as
``./compare``.
"""

from __future__ import annotations

import sys
from typing import Sequence

from orchestrator import compare, run

SUBCOMMANDS = {"compare": compare.main}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``prunediff``; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:
        return SUBCOMMANDS[args[0]](args[1:])
    return run.main(args, prog="prunediff")


def console() -> None:
    """The console script: exit with :func:`main`'s code."""
    sys.exit(main())


if __name__ == "__main__":
    console()
