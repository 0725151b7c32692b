"""Markdown of the analysis: the plan, one table per Holm family, the labeller table.

Every verdict row states the effect (A - B) with its 95% t-interval, the test, n, t,
df, p, the Holm-adjusted p, the minimal detectable effect and the verdict. Nothing here
computes statistics; it formats :class:`~eval.analysis.core.Verdict` rows.
"""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from eval.analysis.core import FAILS, HOLDS, OPEN, UNMEASURED, Verdict
from eval.analysis.plan import Plan

MARK = "†"
CLAIMS = {"a": "(a) quality holds at high pruning ratios",
          "baseline": "each method against the baseline",
          "b": "(b) clustering beats the other methods (confirmatory contestant)",
          "b-exploratory": "(b) other clustering variants (exploratory)",
          "c": "(c) balanced clustering moves class shares towards uniform",
          "d": "(d) samples closer to the training data as more is removed"}


def fmt(x: float, digits: int | None = None, sign: str = "") -> str:
    """A number for a table: 4 decimals under 10, else 2; "n/a" when not finite."""
    if not isinstance(x, (int, float)) or not math.isfinite(x):
        return "n/a"
    d = digits if digits is not None else (4 if abs(x) < 10 else 2)
    return f"{x:{sign}.{d}f}"


def fmt_p(p: float) -> str:
    """A p-value: 3 decimals, scientific under 0.001, "n/a" when not finite."""
    return "n/a" if not math.isfinite(p) else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def plan_markdown(plan: Plan) -> str:
    """The pre-registered plan as a two-column table."""
    rows = [("primary metrics", ", ".join(plan.metrics)),
            ("trend metrics (d)", ", ".join(plan.trend_metrics) or "none"),
            ("space of the verdicts", f"{plan.space} (suffix `_{plan.short}`)"),
            ("baseline", plan.baseline),
            ("(b) contestant", plan.contestant or "none (no code-default clustering variant)"),
            ("exploratory variants", ", ".join(plan.exploratory) or "none"),
            ("(c) balanced method", plan.balanced or "none"),
            ("methods selecting in this space (†)", ", ".join(plan.circular) or "none"),
            ("high ratios", f">= {plan.high_ratio:g}"),
            ("(a) equivalence margin", f"±{plan.margin:.0%} of the full-data mean (TOST)"),
            ("alpha (per Holm family)", f"{plan.alpha:g}"),
            ("power of the MDE", f"{plan.power:.0%}")]
    return "| setting | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"


def _ratio(r: float) -> str:
    return "all" if not math.isfinite(r) else f"{r:.2f}"


def family_markdown(rows: Sequence[Verdict]) -> str:
    """One family's table (its name in bold above it)."""
    d = 4
    eff = [abs(v.result.effect) for v in rows if math.isfinite(v.result.effect)]
    if eff and max(eff) >= 10:
        d = 2
    head = ["A", "B", "ratio", "test", "n", "effect A − B [95% CI]", "t", "df", "p",
            "p (Holm)", "MDE", "verdict", "note"]
    lines = [f"**{rows[0].family}**", "", "| " + " | ".join(head) + " |",
             "|" + "|".join("---" for _ in head) + "|"]
    for v in rows:
        r = v.result
        name = f"{v.method} {MARK}" if v.circular else v.method
        effect = "n/a" if r.test == "none" else (
            f"{fmt(r.effect, d, '+')} [{fmt(r.ci[0], d, '+')}, {fmt(r.ci[1], d, '+')}]")
        verdict = f"**{v.verdict}**" if v.verdict in (HOLDS, FAILS) else v.verdict
        cells = [name, v.against, _ratio(v.ratio), r.test, str(r.n + r.n_b if r.n_b else r.n), effect,
                 fmt(r.t, 2, "+"), fmt(r.df, 1), fmt_p(r.p), fmt_p(v.p_holm), fmt(r.mde, d), verdict,
                 v.note]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary_markdown(rows: Sequence[Verdict]) -> str:
    """Per claim: how many rows hold, do not hold, are inconclusive or not measured."""
    lines = ["| claim | rows | holds | does not hold | inconclusive | not measured |",
             "|---|---|---|---|---|---|"]
    for claim, title in CLAIMS.items():
        sel = [v for v in rows if v.claim == claim]
        if sel:
            n = {k: sum(v.verdict == k for v in sel) for k in (HOLDS, FAILS, OPEN, UNMEASURED)}
            lines.append(f"| {title} | {len(sel)} | {n[HOLDS]} | {n[FAILS]} | {n[OPEN]} | "
                         f"{n[UNMEASURED]} |")
    return "\n".join(lines) + "\n"


def labeller_markdown(table: pd.DataFrame, accuracy_note: str = "") -> str:
    """The (c) labeller table: KL to uniform of the samples per labeller and of the subset."""
    if table.empty:
        return ""
    cols = [c for c in table.columns if c not in ("method", "ratio", "seeds")]
    lines = ["| method | ratio | seeds | " + " | ".join(cols) + " |",
             "|" + "|".join("---" for _ in range(len(cols) + 3)) + "|"]
    for _, row in table.iterrows():
        cells = [row["method"], f"{row['ratio']:.2f}", str(row["seeds"])]
        cells += [fmt(row[c], 3) if isinstance(row[c], float) else str(row[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    notes = ("kl_pred_*: KL to uniform of the samples' class shares as the trained classifier "
             "predicts them; kl_nn_*: as their nearest training image in that space labels them "
             "(unvalidated); kl_subset: of the training subset itself (true labels); agree_*: share "
             "of samples where the classifier and the nearest neighbour agree (an upper bound "
             "1 − TV of the share vectors where not recorded per sample).")
    return "\n".join(lines) + "\n\n" + notes + (" " + accuracy_note if accuracy_note else "") + "\n"


NOTES = ("How to read: A − B is the method's mean minus the comparator's over the seeds "
         "(paired by seed: same seed, same initial weights and data order; Welch where fewer "
         "than two seeds are common), with its 95% t-interval; df = pairs − 1 (per-seed slopes: "
         "seeds − 1). (a) is TOST: \"holds\" = equivalent within the margin, \"does not hold\" = "
         "significantly worse beyond it; its p is the larger of the two one-sided p-values and "
         "its MDE is the smallest margin the design could establish. (d) rows: the effect is the "
         "mean over seeds of each seed's least-squares slope per unit ratio. Elsewhere \"holds\" = "
         "significantly better (for (d): significantly closer to the training data). Holm over "
         "each family; verdicts at Holm p < alpha; the MDE (at the plan's power) is computed at "
         "alpha / m, the threshold Holm applies to a family's smallest p. \"inconclusive\" is "
         f"not evidence of no effect. {MARK}: the method selected its subset in this space; its "
         "metrics there are rewarded by construction.")


def page_markdown(rows: Sequence[Verdict], plan: Plan, labeller_tables: dict[str, pd.DataFrame],
                  title: str = "Results", extra: str = "") -> str:
    """One section of the results page: the plan, then per dataset a summary and every family.

    Args:
        rows: the verdicts of :func:`eval.analysis.families.analyse`.
        plan: the plan they follow.
        labeller_tables: dataset -> :func:`eval.analysis.samples.labeller_table`.
        title: the section's heading (level 2); datasets are level 3, claims level 4.
        extra: Markdown appended (e.g. the reliability table).

    Returns:
        The Markdown; :data:`NOTES` (how to read it) is not included.
    """
    parts = [f"## {title}\n", "**The plan** (the config's `analysis:` section, fixed before the run)\n",
             plan_markdown(plan)]
    for ds in dict.fromkeys(v.dataset for v in rows):
        sub = [v for v in rows if v.dataset == ds]
        parts += [f"### {ds or 'all trials'}\n", summary_markdown(sub)]
        for claim in CLAIMS:
            fams = dict.fromkeys(v.family for v in sub if v.claim == claim)
            if fams:
                parts.append(f"#### {CLAIMS[claim]}\n")
            for fam in fams:
                parts.append(family_markdown([v for v in sub if v.family == fam]))
            if claim == "c" and ds in labeller_tables and not labeller_tables[ds].empty:
                parts += ["**(c) labellers: samples and training subset**\n",
                          labeller_markdown(labeller_tables[ds])]
    if extra:
        parts.append(extra)
    return "\n".join(p for p in parts if p)
