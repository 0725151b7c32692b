"""The command line: ``python -m orchestrator.run CONFIG [--set k=v ...] [--until STAGE]
[--dry-run] [--fresh]``.

``--until STAGE`` (encode, embed, proxy, score, select, sweep, report; default report)
stops after STAGE and runs only the stages the configured methods need
(``orchestrator/until.py``): ``--until select`` prunes without training and writes the
subsets to ``<output_dir>/subsets/`` (``orchestrator/stages/export.py``).

Exit codes: 0 success; 2 a user mistake (missing config file, bad YAML, a file that
is not UTF-8 text, a config error, an image folder without one readable image: one
line on stderr, no traceback); 1 a failed run. These runs fail with one line (exit
1, the traceback with ``-v``): the output directory is locked by another live run
(``storage/lock.py``), the MLflow server does not answer, an artifact write fails
(``OSError``, e.g. a full disk: the artifacts written before stay valid and are
reused by the next run). ``--dry-run`` validates
the config, prints it resolved (YAML), each dataset's held-out reference (origin and
size), each stage's work and estimated cost (``orchestrator.sizing``), which stages
``--until`` runs and which it skips, and the trial grid, and never imports Ray.

Relative paths in the config are resolved against the directory this command is
started in. Under ``ray job submit`` that is the job's temporary working dir, so
cluster configs use absolute paths or s3:// / gs:// URIs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from orchestrator.config import Config, describe_references, dump_yaml, load_config
from orchestrator.config.checks import circularity_warnings
from orchestrator.config.plan import TrialPlan
from orchestrator.errors import ConfigError, RunError
from orchestrator.until import UNTIL, format_plan, reaches
from orchestrator.version import version_line


def parse_args(argv: Sequence[str] | None = None,
               prog: str = "python -m orchestrator.run") -> argparse.Namespace:
    """The command line; ``prog`` names it in the help (``prunediff`` for the console
    command, :mod:`orchestrator.cli`)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run a data-pruning sweep (dataset x method x ratio x seed) on Ray.",
        epilog="Compare two finished sweeps: prunediff compare OUT_A OUT_B "
               "(python -m orchestrator.compare).")
    p.add_argument("config", help="experiment YAML, e.g. experiments/quickstart.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key with a YAML value, e.g. --set train.steps=50 "
                        "--set 'pruning.ratios=[0.25,0.5]' --set data.datasets[0].limit=100")
    p.add_argument("--dry-run", action="store_true",
                   help="validate, print the resolved config, the trial grid and the estimated "
                        "cost per stage; start nothing")
    p.add_argument("--until", choices=UNTIL, default="report", metavar="STAGE",
                   help="stop after STAGE (" + ", ".join(UNTIL) + "; default: report); "
                        "--until select prunes without training and writes "
                        "<output_dir>/subsets/")
    p.add_argument("--fresh", action="store_true",
                   help="ignore cached artifacts and earlier trial results; rebuild everything")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action="version", version=version_line(),
                   help="print the version (and the git commit of a checkout) and exit")
    return p.parse_args(argv)


def format_grid(cfg: Config) -> str:
    """One line per trial (dataset, method, ratio, seed) and the count."""
    trials = TrialPlan.from_config(cfg).trials
    width = max([len(t.method) for t in trials] + [6])
    dwidth = max([len(t.dataset) for t in trials] + [7])
    lines = [f"{'dataset':<{dwidth}}  {'method':<{width}}  ratio  seed"]
    lines += [f"{t.dataset:<{dwidth}}  {t.method:<{width}}  {t.ratio:5.2f}  {t.seed:>4}"
              for t in trials]
    lines.append(f"{len(trials)} trials")
    return "\n".join(lines)


def _error(message: str, code: int = 2) -> int:
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    print(f"error: {first}", file=sys.stderr)
    return code


def _os_error(e: OSError) -> str:
    """``No space left on device: /path`` for an OSError, also one raised in a Ray task."""
    cause = getattr(e, "cause", None)  # ray.exceptions.RayTaskError(OSError)
    if isinstance(cause, OSError):
        e = cause
    where = e.filename or ""
    what = e.strerror or str(e).strip().splitlines()[-1]
    return f"{what}: {where}" if where else what


def main(argv: Sequence[str] | None = None, prog: str = "python -m orchestrator.run") -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv, prog)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        return _error(str(e))
    except OSError as e:  # unreadable config file (permissions, a directory, ...)
        return _error(f"{args.config}: {e.strerror or e}")
    if args.dry_run:
        print(dump_yaml(cfg), end="")
        print("---")
        print(describe_references(cfg))
        # lazy: weights imports models (torch), ~2.4 s; at module top --help (~0.3 s) would pay it
        from orchestrator.weights import describe_weights, reference_warnings

        print("\n".join(describe_weights(cfg)))
        for line in reference_warnings(cfg):
            print(line, file=sys.stderr)
        # lazy: sizing imports data.sources (numpy, PIL, pyarrow), ~0.3 s; --help would pay it
        from orchestrator.sizing import estimate, format_estimate

        print(format_estimate(cfg, estimate(cfg)))
        print("---")
        print(format_plan(cfg, args.until))
        print("---")
        print(format_grid(cfg))
        for line in circularity_warnings(cfg) if reaches(args.until, "sweep") else ():
            print(line, file=sys.stderr)
        return 0
    # lazy: the pipeline imports torch and the stages, ~2.7 s; --help and --dry-run would pay it
    from orchestrator.pipeline import run_pipeline

    try:
        return int(run_pipeline(cfg, fresh=args.fresh, until=args.until))
    except ConfigError as e:
        return _error(str(e))
    except RunError as e:
        logging.getLogger("orchestrator.run").debug("run failed", exc_info=True)
        return _error(str(e), 1)
    except OSError as e:  # disk full, permissions, a vanished bucket
        logging.getLogger("orchestrator.run").debug("run failed", exc_info=True)
        return _error(f"run failed: {_os_error(e)} (artifacts written before are kept and "
                      f"reused by the next run; -v for the traceback)", 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        logging.getLogger("orchestrator.run").exception("run failed")
        return 1


if __name__ == "__main__":
    sys.exit(main())
