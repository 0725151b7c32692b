"""Do the verdicts depend on how long the proxy trained? A short-proxy sweep against the
same sweep with a long proxy (issue 24, item 5).

    python -m eval.analysis.proxy_length \\
        --short benchmarks/results/reproduce_<hash>_<date>.trials.csv \\
        --long benchmarks/results/proxy_sensitivity_<hash>_<date>.trials.csv \\
        --agreement benchmarks/results/proxy_sensitivity_<hash>_<date>.agreement.csv \\
        --config experiments/proxy_sensitivity.yaml --out docs/proxy_length.md

Two parts, both from committed CSVs:

- **Score agreement** (``--agreement``, written once from the two runs' exported subsets
  with ``--subsets-short DIR --subsets-long DIR --agreement-out CSV``): per statistic
  method and seed, Spearman's rho between the two proxies' scores of the same images
  and, per ratio, the share of the short proxy's kept images the long proxy keeps too.
- **Verdicts side by side:** the short sweep restricted to the long sweep's seeds and
  methods (so each Holm family holds the same comparisons), both analysed with the
  same pre-registered plan (``--config``'s ``analysis:`` section); a row per verdict
  with each run's effect, Holm p and verdict, and whether the verdict changed.

Pure pandas/numpy/scipy; exit code 2 with a one-line message on a user mistake.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

from eval.analysis.families import analyse
from eval.analysis.plan import AnalysisError
from eval.analysis.reliability import split_half_rho
from eval.analysis.render import fmt, fmt_p
from eval.analysis.report import plan_from_config, read_config, read_csv
from eval.analysis.trials_table import TrialsError

JOIN = ["claim", "metric", "method", "against", "ratio", "test"]
SUBSET_FILE = re.compile(r"^(?P<method>.+)_r(?P<ratio>\d+)_s(?P<seed>\d+)\.parquet$")


def score_agreement(short_dir: str | Path, long_dir: str | Path) -> pd.DataFrame:
    """Agreement of two runs' exported subsets (``<output_dir>/subsets/<dataset>/``).

    For every ``<method>_r<ratio%>_s<seed>.parquet`` present in both folders: ``rho``,
    Spearman's rho of the two runs' ``score`` column over the images both files list
    (NaN for a method without scores, e.g. random), and ``kept_overlap``, the share of
    the short run's kept images (``key``) the long run keeps too.

    Returns:
        columns ``method, ratio, seed, n_kept, rho, kept_overlap``, sorted.

    Raises:
        FileNotFoundError: a folder is missing or the two share no subset file.
    """
    a, b = Path(short_dir), Path(long_dir)
    for d in (a, b):
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: no such subsets folder")
    rows = []
    for path in sorted(a.glob("*.parquet")):
        m = SUBSET_FILE.match(path.name)
        if not m or int(m["ratio"]) == 0 or not (b / path.name).is_file():
            continue   # ratio 0: the full data, nothing selected
        sa, sb = pd.read_parquet(path), pd.read_parquet(b / path.name)
        both = sa.merge(sb, on="key", suffixes=("_a", "_b"))
        rho = (split_half_rho(both["score_a"].to_numpy(), both["score_b"].to_numpy())
               if "score_a" in both and len(both) else float("nan"))
        rows.append({"method": m["method"], "ratio": int(m["ratio"]) / 100,
                     "seed": int(m["seed"]), "n_kept": len(sa),
                     "rho": rho, "kept_overlap": len(both) / len(sa) if len(sa) else float("nan")})
    if not rows:
        raise FileNotFoundError(f"{a} and {b} share no <method>_r<ratio>_s<seed>.parquet file")
    return pd.DataFrame(rows).sort_values(["method", "ratio", "seed"]).reset_index(drop=True)


def verdicts_side_by_side(short: pd.DataFrame, long: pd.DataFrame, raw_config: dict) -> pd.DataFrame:
    """Every verdict row of ``long`` beside the same row of ``short``, both analysed with
    the plan of ``raw_config`` (a config dict, :func:`eval.analysis.report.read_config`);
    ``short`` is first restricted to ``long``'s seeds and methods.

    Returns:
        the :data:`JOIN` columns, then ``effect``, ``p_holm``, ``verdict`` with the
        suffixes ``_short`` / ``_long``, and ``changed`` (the two verdicts differ).
    """
    plan = plan_from_config(raw_config)
    short = short[short["seed"].isin(set(long["seed"])) & short["method"].isin(set(long["method"]))]
    out = []
    for name, df in (("short", short), ("long", long)):
        rows = pd.DataFrame([v.row() for v in analyse(df.reset_index(drop=True), plan)])
        out.append(rows[[*JOIN, "effect", "p_holm", "verdict"]]
                   .rename(columns={c: f"{c}_{name}" for c in ("effect", "p_holm", "verdict")}))
    both = out[0].merge(out[1], on=JOIN, how="outer")
    both["changed"] = both["verdict_short"] != both["verdict_long"]
    return both


def page(agreement: pd.DataFrame, side: pd.DataFrame, command: str) -> str:
    """The Markdown page: score agreement by method, then the verdicts side by side."""
    lines = ["# Proxy length: verdicts with a short and a long proxy", "",
             f"Generated from committed CSVs; do not edit by hand: `{command}`.", "",
             "## Score agreement (short vs long proxy)", "",
             "Spearman's rho of the two proxies' scores of the same images (mean over seeds, "
             "[min, max]); kept overlap: the share of the short proxy's subset the long "
             "proxy's subset keeps too (mean over seeds).", ""]
    ratios = sorted(agreement["ratio"].unique())
    lines.append("| method | seeds | rho | " + " | ".join(f"overlap r{r:g}" for r in ratios) + " |")
    lines.append("|" + "---|" * (3 + len(ratios)))
    for method, g in agreement.groupby("method", sort=True):
        rho = g.groupby("seed")["rho"].first()
        cell = (f"{rho.mean():.3f} [{rho.min():.3f}, {rho.max():.3f}]" if rho.notna().any()
                else "no score")
        over = [fmt(float(g[g["ratio"] == r]["kept_overlap"].mean()), 2) for r in ratios]
        lines.append(f"| {method} | {g['seed'].nunique()} | {cell} | " + " | ".join(over) + " |")
    n_changed = int(side["changed"].sum())
    lines += ["", "## Verdicts side by side", "",
              f"{len(side)} verdict rows; {n_changed} change with the proxy's length. The short "
              "run is restricted to the long run's seeds and methods, both analysed with the "
              "same plan (same Holm families).", "",
              "| claim | metric | method | vs | ratio | effect short | Holm p short | verdict short "
              "| effect long | Holm p long | verdict long |", "|" + "---|" * 11]
    for r in side.sort_values(["claim", "metric", "method", "against", "ratio"]).itertuples():
        mark = "**" if r.changed else ""
        lines.append(f"| {r.claim} | {r.metric} | {r.method} | {r.against} | {r.ratio:g} | "
                     f"{fmt(r.effect_short)} | {fmt_p(r.p_holm_short)} | {r.verdict_short} | "
                     f"{fmt(r.effect_long)} | {fmt_p(r.p_holm_long)} | "
                     f"{mark}{r.verdict_long}{mark} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """CLI; see the module docstring. Returns 0, or 2 on a user mistake (one line)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subsets-short", help="write --agreement-out from two subsets folders")
    ap.add_argument("--subsets-long")
    ap.add_argument("--agreement-out")
    ap.add_argument("--short", help="trials CSV of the short-proxy sweep")
    ap.add_argument("--long", help="trials CSV of the long-proxy sweep")
    ap.add_argument("--agreement", help="score agreement CSV (from --agreement-out)")
    ap.add_argument("--config", help="config holding the analysis: section")
    ap.add_argument("--out", help="the Markdown page to write")
    args = ap.parse_args(argv)
    try:
        if args.agreement_out:
            if not (args.subsets_short and args.subsets_long):
                raise AnalysisError("--agreement-out needs --subsets-short and --subsets-long")
            score_agreement(args.subsets_short, args.subsets_long).to_csv(args.agreement_out,
                                                                          index=False)
            print(f"wrote {args.agreement_out}")
        if args.out:
            missing = [f"--{k}" for k in ("short", "long", "agreement", "config")
                       if not getattr(args, k)]
            if missing:
                raise AnalysisError(f"--out needs {', '.join(missing)}")
            side = verdicts_side_by_side(read_csv(args.short), read_csv(args.long),
                                         read_config(args.config))
            command = (f"python -m eval.analysis.proxy_length --short {args.short} --long "
                       f"{args.long} --agreement {args.agreement} --config {args.config} "
                       f"--out {args.out}")
            Path(args.out).write_text(page(pd.read_csv(args.agreement), side, command))
            print(f"wrote {args.out} ({len(side)} verdict rows, {int(side['changed'].sum())} changed)")
    except (AnalysisError, TrialsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
