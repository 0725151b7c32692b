"""Verdicts on the paper's three claims from raw per-trial results (``trials.csv``).

Input: one or two ``trials.csv`` files (format: :mod:`eval.trials`; one row per trial,
``dataset, method, ratio, seed, <metrics>``). Output, as Markdown tables:

(a) quality holds at high pruning ratios: every method at ratios >= 0.75 against the
    full-data baseline on ``--metric``;
(b) clustering beats the other methods at high ratios: per ratio >= 0.75, the
    clustering variant with the best mean against each non-clustering method;
(c) balanced clustering moves the generated class shares of a skewed set closer to
    uniform than random pruning (``cov_kl_uniform``, from ``--skewed``), per ratio;
(d) with ``--distance``: are samples of pruned models closer to cluster centres (or to
    training images) than the full-data model's, every method and ratio; and per method,
    the slope of that distance against the ratio (:mod:`eval.trend`).

Every row's statistics (means with bootstrap CIs, Welch's t with its df, two-sided p,
Holm correction within the table, and when a row may say "significant") are those of
:mod:`eval.verdicts`, whose docstring states them.

Methods that selected their subset in the metric's own feature space are named with
``--circular`` and marked †: the selection is rewarded by construction there.

    python -m benchmarks.paper_claims TRIALS.csv --metric fd_effnet \\
        [--circular clustering_nearest,clustering_balanced] [--skewed SKEWED_TRIALS.csv]
    python -m benchmarks.paper_claims --update-docs   # every verdict table in the docs

``--update-docs`` renders each table of ``benchmarks/results/verdicts.yaml`` (see
``benchmarks/results/README.md``) and replaces the text between
``<!-- verdicts:NAME:begin -->`` and ``<!-- verdicts:NAME:end -->`` in README.md and
benchmarks/RESULTS.md, so the two documents cannot disagree. The tables themselves are
computed by :mod:`eval.verdicts` (shared with the pipeline's report stage).
"""

from __future__ import annotations

import argparse
import sys

from eval.trend import render_trend
from eval.trials import TrialsError, read_trials
from eval.verdicts import (ALPHA, BALANCE_METRIC, FULL, HIGH, MARK, Claim, ClaimsError,  # noqa: F401
                           claim_a, claim_b, claim_c, compare, render)


def _csv_set(text: str) -> set[str]:
    return {c.strip() for c in text.split(",") if c.strip()}


def main(argv: list[str] | None = None) -> int:
    """CLI; see the module docstring. Returns 0, or 2 on a user mistake (one line)."""
    from benchmarks.verdict_docs import update_docs

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trials", nargs="?", help="trials.csv of the reproduction sweep: claims (a), (b)")
    ap.add_argument("--skewed", help="trials.csv of the skewed-set sweep: claim (c)")
    ap.add_argument("--metric", help="primary quality metric (a column of TRIALS), e.g. fd_effnet")
    ap.add_argument("--higher-is-better", action="store_true", help="the metric improves upwards")
    ap.add_argument("--circular", default="", help="comma-separated methods that selected in the "
                    f"metric's feature space (marked {MARK})")
    ap.add_argument("--skewed-circular", default="", help="comma-separated methods that selected in "
                    f"the space that labels the samples behind {BALANCE_METRIC} (marked {MARK})")
    ap.add_argument("--balance-metric", default=BALANCE_METRIC, help="column of claim (c): "
                    f"{BALANCE_METRIC} or its per-space name, e.g. {BALANCE_METRIC}_cls")
    ap.add_argument("--distance", help="also the open question (d) on this distance column of "
                    "TRIALS, e.g. mem_centroid_nn_mean_effnet (lower = closer)")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ap.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples per mean")
    ap.add_argument("--update-docs", action="store_true",
                    help="regenerate every verdict table in README.md and benchmarks/RESULTS.md")
    ap.add_argument("--manifest", help="verdict tables manifest (default benchmarks/results/verdicts.yaml)")
    ap.add_argument("--root", help="repository root holding the documents (default: this checkout)")
    args = ap.parse_args(argv)
    try:
        if args.update_docs:
            for line in update_docs(args.manifest, args.root):
                print(line)
            return 0
        if not args.trials and not args.skewed:
            raise ClaimsError("give TRIALS.csv and/or --skewed SKEWED.csv, or --update-docs")
        trials = read_trials(args.trials) if args.trials else None
        skewed = read_trials(args.skewed) if args.skewed else None
        print(render(trials, args.metric, skewed, circular=_csv_set(args.circular),
                     lower_is_better=not args.higher_is_better, seed=args.seed, n_boot=args.n_boot,
                     source=str(args.trials), skewed_source=str(args.skewed),
                     skewed_circular=_csv_set(args.skewed_circular),
                     balance_metric=args.balance_metric))
        if args.distance and trials is not None:
            print(render(trials, args.distance, claims=["d"], circular=_csv_set(args.circular),
                         seed=args.seed, n_boot=args.n_boot, source=str(args.trials)))
            print(render_trend(trials, args.distance, _csv_set(args.circular)))
    except (ClaimsError, TrialsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
