"""The pre-registered analysis of a sweep: verdicts with the seed as the unit.

Fixed before the run by the config's ``analysis:`` section (resolved into a
:class:`Plan` by :func:`resolve_plan`, logged with the run), it asks each claim of the
paper as one or more Holm families and gives every row the effect, its 95% interval,
p, df, Holm p, the minimal detectable effect and a verdict in {"holds",
"does not hold", "inconclusive"} ("not measured" where the data is missing).

Modules:
    trials_table: the ``trials.csv`` table of finished trials (read, check, write).
    inference: paired t, Welch t, TOST, per-seed slopes, MDE, Holm (pure scipy).
    plan: the resolved plan, metric naming and directions.
    core: verdict rows and the Holm family.
    families: claims (a), each method vs the baseline, (b), (d); :func:`analyse`.
    samples: claim (c) with two labellers; :func:`copy_rate`.
    reliability: split-half / proxy-to-proxy rho of the pruning scores.
    render: Markdown; report: the results-page CLI.
    welch_tables: the report stage's older unpaired Welch tables on (a), (b), (c).

Pure numpy / scipy / pandas: never imports ray, mlflow, the orchestrator or the models.
"""

from eval.analysis.core import Verdict, run_family
from eval.analysis.families import analyse, claim_a, claim_b, claim_d, vs_baseline
from eval.analysis.inference import (TestResult, holm, mde, one_sample_t, paired_t, seed_slopes,
                                     tost, tost_mde, welch_t)
from eval.analysis.plan import AnalysisError, Plan, resolve_plan
from eval.analysis.reliability import reliability_table, split_half_rho
from eval.analysis.render import page_markdown
from eval.analysis.samples import claim_c, copy_rate, kl_to_uniform, labeller_table

__all__ = ["AnalysisError", "Plan", "TestResult", "Verdict", "analyse", "claim_a", "claim_b",
           "claim_c", "claim_d", "copy_rate", "holm", "kl_to_uniform", "labeller_table", "mde",
           "one_sample_t", "page_markdown", "paired_t", "reliability_table", "resolve_plan",
           "run_family", "seed_slopes", "split_half_rho", "tost", "tost_mde", "vs_baseline",
           "welch_t"]
