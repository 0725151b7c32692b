"""Generate the results page from committed trials CSVs and the config's ``analysis:`` section.

    python -m eval.analysis.report benchmarks/results/reproduce_<hash>_<date>.trials.csv \\
        --config experiments/reproduce.yaml --out docs/results.md [--rows-out verdicts.csv]

Each CSV (format: :mod:`eval.analysis.trials_table`; a CSV without a ``dataset``
column is one dataset) is analysed with the plan resolved from its config (one
``--config`` for every CSV, or one per CSV in the same order) and becomes one section of
the page, named after the dataset and the file. The page is generated, never hand-written: rerunning the command
on the same files gives the same page.

The config is read as YAML (a top-level ``extends:`` merged as
``orchestrator.config.loader`` merges it); only ``analysis``, ``eval.primary``,
``eval.embedders`` and ``pruning.methods`` are used. Exit code 2 with a one-line
message on a user mistake.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import yaml

from eval.analysis.families import analyse
from eval.analysis.plan import AnalysisError, Plan, resolve_plan
from eval.analysis.render import NOTES, page_markdown
from eval.analysis.samples import labeller_table
from eval.analysis.trials_table import TrialsError, check_trials

DEFAULT_EMBEDDERS = ("effnet_lite0",)   # orchestrator.config.schema.EvalConfig.embedders


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: _merge(base[k], v) if k in base else v for k, v in over.items()}}
    return over


def read_config(path: str | os.PathLike, chain: tuple[Path, ...] = ()) -> dict:
    """A config YAML as a dict, its ``extends:`` base merged under it (mappings by key).

    Raises:
        AnalysisError: a missing or invalid file, or an ``extends`` cycle.
    """
    p = Path(path).resolve()
    if p in chain:
        raise AnalysisError(f"{path}: extends: cycle through {p}")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise AnalysisError(f"{path}: cannot read config ({type(e).__name__})") from None
    if not isinstance(raw, dict):
        raise AnalysisError(f"{path}: expected a mapping of sections")
    base = raw.pop("extends", None)
    return _merge(read_config(p.parent / base, chain + (p,)), raw) if base else raw


def plan_from_config(raw: dict) -> Plan:
    """The :class:`Plan` of a parsed config dict (see :func:`read_config`)."""
    ev = raw.get("eval") or {}
    embedders = tuple(ev.get("embedders") or DEFAULT_EMBEDDERS)
    methods = [{"name": m} if isinstance(m, str) else dict(m)
               for m in (raw.get("pruning") or {}).get("methods") or []]
    return resolve_plan(raw.get("analysis"), ev.get("primary") or embedders[0], methods, embedders)


def read_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A trials CSV, validated; ``dataset`` filled with "" when the file has no such column.

    Raises:
        TrialsError: unreadable or malformed.
    """
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise TrialsError(f"{path}: cannot read trials CSV ({type(e).__name__})") from None
    if "dataset" not in df.columns:
        df.insert(0, "dataset", "")
    return check_trials(df, str(path))


def build_page(csvs: Sequence[str], configs: Sequence[str], command: str = "") -> tuple[str, pd.DataFrame]:
    """The page's Markdown and every verdict row (one DataFrame) for ``csvs``.

    Args:
        csvs: trials CSV paths.
        configs: one config path for all CSVs, or one per CSV.
        command: the command line shown in the page's header.

    Raises:
        AnalysisError, TrialsError: a bad config, plan or CSV.
    """
    if len(configs) not in (1, len(csvs)):
        raise AnalysisError(f"give one --config for all CSVs or one per CSV "
                            f"({len(configs)} configs, {len(csvs)} CSVs)")
    pairs = list(zip(csvs, configs if len(configs) == len(csvs) else list(configs) * len(csvs)))
    header = ["# Results", "", "Generated from committed per-trial CSVs and the configs' "
              "pre-registered `analysis:` sections; do not edit by hand"
              + (f": `{command}`" if command else "") + ".", ""]
    sections = []
    for csv, cfg in pairs:
        plan = plan_from_config(read_config(cfg))
        df = read_csv(csv)
        name = Path(csv).name
        header.append(f"- `{name}` ({len(df)} trials, seeds "
                      f"{', '.join(map(str, sorted(df['seed'].unique())))}), analysis of `{cfg}`")
        df["dataset"] = [f"{d} ({name})" if d else name for d in df["dataset"]]
        sections.append((df, plan))
    parts, rows = ["\n".join(header) + "\n", NOTES + "\n"], []
    for (csv, cfg), (df, plan) in zip(pairs, sections):
        verdicts = analyse(df, plan)
        tables = {ds: labeller_table(df[df["dataset"] == ds], plan) for ds in dict.fromkeys(df["dataset"])}
        parts.append(page_markdown(verdicts, plan, tables, title=f"{Path(csv).name} ({cfg})"))
        rows += [v.row() for v in verdicts]
    return "\n".join(parts), pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    """CLI; see the module docstring. Returns 0, or 2 on a user mistake (one line)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csvs", nargs="+", metavar="CSV", help="trials CSVs (method, ratio, seed, metrics)")
    ap.add_argument("--config", action="append", required=True,
                    help="experiment config holding the analysis: section (once, or once per CSV)")
    ap.add_argument("--out", required=True, help="the Markdown page to write")
    ap.add_argument("--rows-out", help="also write every verdict row as CSV")
    args = ap.parse_args(argv)
    command = "python -m eval.analysis.report " + " ".join(
        [*args.csvs, *(f"--config {c}" for c in args.config), f"--out {args.out}"])
    try:
        page, rows = build_page(args.csvs, args.config, command)
    except (AnalysisError, TrialsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(page)
    if args.rows_out:
        rows.to_csv(args.rows_out, index=False)
    print(f"wrote {args.out} ({len(rows)} verdict rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
