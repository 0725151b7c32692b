"""The report stage's Welch verdict tables on the paper's claims (a), (b), (c) (``verdicts.md``).

Unpaired Welch tests that pool the trials of a row across seeds, one table per claim:
the older verdicts, which the pre-registered analysis (:mod:`eval.analysis.families`:
paired by seed, TOST, per-seed slopes) supersedes; the report stage still writes them
(``orchestrator/stages/report.py: verdicts_markdown``).

Input: a trials table (:func:`eval.analysis.trials_table.read_trials`; one row per
trial, ``dataset, method, ratio, seed, <metrics>``). Output, as Markdown tables:

(a) quality holds at high pruning ratios: every method at ratios >= 0.75 against the
    full-data baseline on the primary metric;
(b) clustering beats the other methods at high ratios: per ratio >= 0.75, the
    clustering variant with the best mean against each non-clustering method;
(c) balanced clustering moves the generated class shares of a skewed set closer to
    uniform than random pruning (``cov_kl_uniform[_<space>]``), per ratio.

Every row: mean ± std with a percentile-bootstrap 95% CI per mean (:func:`bootstrap_ci`),
the difference, Welch's t (:func:`eval.analysis.inference.welch_t`), its
Welch–Satterthwaite df, the two-sided p and the Holm-corrected p
(:func:`eval.analysis.inference.holm`) across the comparisons of that one table. A row
says "significantly better/worse" only at corrected p < 0.05, otherwise "not significant
(n = k seeds)"; without two seeds a side there is no test and the row says so. In (b) the
clustering variant is picked by its mean before testing, which favours it slightly; the
Holm family covers every row.

Methods that selected their subset in the metric's own feature space are ``circular``
and marked †: the selection is rewarded by construction there. Pure numpy / pandas / scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Collection, Sequence

import numpy as np
import pandas as pd

from eval.analysis.inference import holm, welch_t

HIGH = 0.75         # "high pruning ratio": this and above
ALPHA = 0.05        # family-wise error rate of one verdict table (Holm)
FULL = "full"
BALANCE_METRIC = "cov_kl_uniform"
MARK = "†"


class ClaimsError(ValueError):
    """A user mistake (missing column, no baseline, bad manifest): one line, exit 2."""


@dataclass
class Claim:
    """One verdict table: a bold headline, the Markdown table and the rows as data."""

    headline: str
    table: str
    rows: list[dict] = field(default_factory=list)

    def markdown(self) -> str:
        """Headline, blank line, table."""
        return f"**{self.headline}**\n\n{self.table}\n"


def bootstrap_ci(values: Sequence[float] | np.ndarray, rng: np.random.Generator,
                 n_boot: int = 10_000, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean.

    Draws ``n_boot`` resamples of the finite values with replacement and returns the
    ``(1 - level)/2`` and ``(1 + level)/2`` quantiles of their means. With few values
    (2-3 seeds) the interval is narrow and undercovers: it shows the spread of the
    resampled means, not a guarantee.

    Args:
        values: (n,) per-seed values; non-finite ones are dropped.
        rng: the generator that draws the resamples (pass one seeded from the config).
        n_boot: number of bootstrap resamples (>= 1).
        level: confidence level in (0, 1).

    Returns:
        ``(lo, hi)`` floats; ``(nan, nan)`` with fewer than two finite values.

    Raises:
        TypeError: ``rng`` is not a ``numpy.random.Generator``.
        ValueError: ``n_boot < 1`` or ``level`` outside (0, 1).
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"need n_boot >= 1 and 0 < level < 1, got {n_boot}, {level}")
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    n = len(x)
    if n < 2:
        return math.nan, math.nan
    means = np.empty(n_boot)
    chunk = max(1, 4_000_000 // n)       # bounded memory for long value lists
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        means[start:stop] = x[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _digits(x: float) -> int:
    return 4 if abs(x) < 10 else 2


def _fmt(x: float, digits: int | None = None, sign: str = "") -> str:
    if not math.isfinite(x):
        return "n/a"
    return f"{x:{sign}.{_digits(x) if digits is None else digits}f}"


def _fmt_p(p: float) -> str:
    return "n/a" if not math.isfinite(p) else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _cell(v: np.ndarray, ci: tuple[float, float]) -> str:
    v = v[np.isfinite(v)]
    if not len(v):
        return "n/a"
    d = _digits(float(v.mean()))
    text = _fmt(float(v.mean()), d)
    if len(v) > 1:
        text += f" ± {_fmt(float(v.std(ddof=1)), d)} [{_fmt(ci[0], d)}, {_fmt(ci[1], d)}]"
    return text


def _name(method: str, circular: Collection[str]) -> str:
    return f"{method} {MARK}" if method in circular else method


def _seeds(n_a: int, n_b: int) -> str:
    return f"n = {n_a} seeds" if n_a == n_b else f"n = {n_a} vs {n_b} seeds"


def compare(pairs: Sequence[tuple[np.ndarray, np.ndarray]], lower_is_better: bool,
            rng: np.random.Generator, n_boot: int = 10_000) -> list[dict]:
    """Welch-test each (a, b) pair, Holm-correct across all pairs, bootstrap each mean.

    Args:
        pairs: per comparison, (n_a,) and (n_b,) per-seed values of the metric.
        lower_is_better: direction of the metric (``a`` better when its mean is lower).
        rng: generator of the bootstrap resamples.
        n_boot: bootstrap resamples per mean.

    Returns:
        Per pair a dict: ``welch`` (the :class:`~eval.analysis.inference.TestResult` of
        :func:`~eval.analysis.inference.welch_t`: ``effect`` = mean(a) - mean(b), ``n``
        and ``n_b`` the values used), ``p_holm``, ``ci_a``, ``ci_b`` and
        ``verdict`` ("significantly better|worse", "not significant (n = k seeds)" or
        "no test: <reason>"), better/worse meaning a against b.
    """
    tests = [welch_t(a, b) for a, b in pairs]
    adjusted = holm([w.p for w in tests])
    out = []
    for (a, b), w, p in zip(pairs, tests, adjusted):
        if not math.isfinite(p):
            verdict = f"no test: {w.reason}"
        elif p < ALPHA:
            verdict = "significantly " + ("better" if (w.effect < 0) == lower_is_better else "worse")
        else:
            verdict = f"not significant ({_seeds(w.n, w.n_b)})"
        out.append({"welch": w, "p_holm": float(p), "verdict": verdict,
                    "ci_a": bootstrap_ci(a, rng, n_boot), "ci_b": bootstrap_ci(b, rng, n_boot)})
    return out


def _table(lead_head: list[str], leads: list[list[str]], pairs: list[tuple[np.ndarray, np.ndarray]],
           res: list[dict], a_name: str, b_name: str, notes: list[str]) -> str:
    head = lead_head + [a_name, b_name, "A − B", "t", "df", "p", "p (Holm)", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for lead, (a, b), r in zip(leads, pairs, res):
        w = r["welch"]
        d = _digits(float(np.nanmean(a))) if np.isfinite(a).any() else None
        cells = lead + [_cell(a, r["ci_a"]), _cell(b, r["ci_b"]), _fmt(w.effect, d, "+"),
                        _fmt(w.t, 2, "+"), _fmt(w.df, 1), _fmt_p(w.p), _fmt_p(r["p_holm"]),
                        r["verdict"]]
        lines.append("| " + " | ".join(cells) + " |")
    if not leads:
        lines.append("| " + " | ".join(["(no rows)"] + [""] * (len(head) - 1)) + " |")
    return "\n".join(lines + [""] + notes)


def _notes(metric: str, lower_is_better: bool, k: int, n_boot: int, marked: bool) -> list[str]:
    notes = [f"Cells: mean ± std over seeds [95% percentile-bootstrap CI of the mean, {n_boot} "
             f"resamples]; {metric}: {'lower' if lower_is_better else 'higher'} is better. "
             f"Welch's t, Welch–Satterthwaite df, two-sided p; Holm over the {k} "
             f"comparison{'' if k == 1 else 's'} of this table; significant at corrected p < {ALPHA}."]
    if marked:
        notes.append(f"{MARK} selected its subset in the feature space of {metric}: circular, "
                     "rewarded by construction.")
    return notes


def _vals(df: pd.DataFrame, metric: str, method: str, ratio: float | None = None) -> np.ndarray:
    sel = df["method"] == method
    if ratio is not None:
        sel &= np.isclose(df["ratio"], ratio)
    return df.loc[sel, metric].to_numpy(dtype=np.float64)


def _need(df: pd.DataFrame, metric: str, source: str) -> None:
    if metric not in df.columns:
        metrics = [c for c in df.columns if c not in ("dataset", "method", "ratio", "seed")]
        raise ClaimsError(f"{source}: no column {metric} (metrics: {', '.join(metrics)})")


def _methods(df: pd.DataFrame) -> list[str]:
    return [m for m in dict.fromkeys(df["method"]) if m != FULL]


def _dataset_tag(ds: str | None) -> str:
    return f"{ds}: " if ds else ""


def _vs_full(df: pd.DataFrame, metric: str, circular: Collection[str], min_ratio: float,
             claim: str, dataset: str | None) -> tuple[list[list[str]], list[tuple[np.ndarray, np.ndarray]]]:
    """Rows (method, ratio) at ratios >= ``min_ratio`` and their (values, full-data values) pairs."""
    full = _vals(df, metric, FULL)
    if not len(full):
        raise ClaimsError(f"{_dataset_tag(dataset)}no full-data rows (method '{FULL}') for claim ({claim})")
    leads, pairs = [], []
    for method in _methods(df):
        for ratio in sorted(df.loc[(df["method"] == method) & (df["ratio"] >= min_ratio), "ratio"].unique()):
            leads.append([_name(method, circular), f"{ratio:.2f}"])
            pairs.append((_vals(df, metric, method, ratio), full))
    return leads, pairs


def claim_a(df: pd.DataFrame, metric: str, circular: Collection[str] = (), lower_is_better: bool = True,
            rng: np.random.Generator | None = None, n_boot: int = 10_000, dataset: str | None = None) -> Claim:
    """(a) each method at ratio >= HIGH against the full-data baseline of one dataset.

    Args:
        df: trials of one dataset (:func:`~eval.analysis.trials_table.read_trials`).
        metric: metric column.
        circular: methods that selected in ``metric``'s feature space (marked).
        lower_is_better: direction of ``metric``.
        rng: bootstrap generator (default ``default_rng(0)``).
        n_boot: bootstrap resamples per mean.
        dataset: dataset name for the headline (None: omitted).

    Returns:
        The :class:`Claim`; ``rows`` hold method, ratio and :func:`compare`'s fields.

    Raises:
        ClaimsError: the dataset has no full-data rows.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    leads, pairs = _vs_full(df, metric, circular, HIGH, "a", dataset)
    res = compare(pairs, lower_is_better, rng, n_boot)
    n = {v: sum(r["verdict"].startswith(v) for r in res)
         for v in ("significantly worse", "significantly better", "not significant", "no test")}
    head = (f"(a) {_dataset_tag(dataset)}quality at ratios >= {HIGH} vs full data ({metric}): "
            f"{n['significantly worse']} of {len(res)} significantly worse, {n['significantly better']} "
            f"significantly better, {n['not significant']} not significant"
            + (f", {n['no test']} without a test" if n["no test"] else ""))
    marked = any(MARK in lead[0] for lead in leads)
    table = _table(["method", "ratio"], leads, pairs, res, "A: the method", "B: full data",
                   _notes(metric, lower_is_better, len(res), n_boot, marked))
    return Claim(head, table, [{"method": l[0].replace(f" {MARK}", ""), "ratio": float(l[1]), **r}
                               for l, r in zip(leads, res)])


def claim_b(df: pd.DataFrame, metric: str, circular: Collection[str] = (), lower_is_better: bool = True,
            rng: np.random.Generator | None = None, n_boot: int = 10_000, dataset: str | None = None) -> Claim:
    """(b) per ratio >= HIGH: the best clustering variant against each other method.

    The variant with the best mean at a ratio is compared with every non-clustering,
    non-full method at that ratio; the claim holds at a ratio when every comparison
    there is significantly better. Args as :func:`claim_a`.

    Returns:
        The :class:`Claim`; ``rows`` hold ratio, clustering, other and :func:`compare`'s fields.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    leads, pairs, ratios = [], [], []
    for ratio in sorted(r for r in df["ratio"].unique() if r >= HIGH):
        at = df[np.isclose(df["ratio"], ratio)]
        means = at.groupby("method")[metric].mean()
        clus = [m for m in _methods(at) if m.startswith("clustering") and math.isfinite(means[m])]
        others = [m for m in _methods(at) if not m.startswith("clustering")]
        if not clus or not others:
            continue
        best = min(clus, key=lambda m: means[m] if lower_is_better else -means[m])
        for other in others:
            leads.append([f"{ratio:.2f}", _name(best, circular), _name(other, circular)])
            pairs.append((_vals(at, metric, best), _vals(at, metric, other)))
            ratios.append(ratio)
    res = compare(pairs, lower_is_better, rng, n_boot)
    wins = [r for r in dict.fromkeys(ratios)
            if all(x["verdict"] == "significantly better" for x, q in zip(res, ratios) if q == r)]
    head = (f"(b) {_dataset_tag(dataset)}the best clustering variant is significantly better than every "
            f"other method ({metric}) at ratios: "
            + (", ".join(f"{r:.2f}" for r in wins) if wins else "none")
            + f" (of {', '.join(f'{r:.2f}' for r in dict.fromkeys(ratios)) or 'no ratio >= ' + str(HIGH)})")
    marked = any(MARK in x for lead in leads for x in lead)
    table = _table(["ratio", "A: best clustering", "B: other"], leads, pairs, res, "A", "B",
                   _notes(metric, lower_is_better, len(res), n_boot, marked))
    return Claim(head, table, [{"ratio": q, "clustering": l[1].replace(f" {MARK}", ""),
                                "other": l[2].replace(f" {MARK}", ""), **r}
                               for q, l, r in zip(ratios, leads, res)])


def claim_c(df: pd.DataFrame, circular: Collection[str] = (), rng: np.random.Generator | None = None,
            n_boot: int = 10_000, metric: str = BALANCE_METRIC) -> Claim:
    """(c) per ratio: balanced clustering against random on ``cov_kl_uniform`` (lower = more uniform).

    Args:
        df: trials of the skewed-set sweep.
        circular: methods to mark.
        rng: bootstrap generator (default ``default_rng(0)``).
        n_boot: bootstrap resamples per mean.
        metric: the column, ``cov_kl_uniform`` or its per-space name (``cov_kl_uniform_cls``).

    Returns:
        The :class:`Claim`; ``rows`` hold ratio and :func:`compare`'s fields.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    m, leads, pairs = metric, [], []
    for ratio in sorted(r for r in df["ratio"].unique() if r > 0):
        bal, rnd = _vals(df, m, "clustering_balanced", ratio), _vals(df, m, "random", ratio)
        if len(bal) and len(rnd):
            leads.append([f"{ratio:.2f}"])
            pairs.append((bal, rnd))
    res = compare(pairs, True, rng, n_boot)
    wins = [l[0] for l, r in zip(leads, res) if r["verdict"] == "significantly better"]
    head = (f"(c) balanced clustering significantly closer to uniform class shares than random "
            f"({m}) at ratios: {', '.join(wins) if wins else 'none'} "
            f"(of {', '.join(l[0] for l in leads) or 'none'})")
    notes = _notes(m, True, len(res), n_boot, "clustering_balanced" in circular)
    full = _vals(df, m, FULL)
    if len(full):
        notes.append(f"Not tested, for context: full data {_cell(full, bootstrap_ci(full, rng, n_boot))}.")
    table = _table(["ratio"], leads, pairs, res, f"A: {_name('clustering_balanced', circular)}",
                   f"B: {_name('random', circular)}", notes)
    return Claim(head, table, [{"ratio": float(l[0]), **r} for l, r in zip(leads, res)])


def render(trials: pd.DataFrame | None = None, metric: str | None = None, skewed: pd.DataFrame | None = None,
           claims: Collection[str] = ("a", "b", "c"), circular: Collection[str] = (),
           lower_is_better: bool = True, seed: int = 0, n_boot: int = 10_000,
           source: str = "trials", skewed_source: str = "skewed",
           skewed_circular: Collection[str] = (), balance_metric: str = BALANCE_METRIC) -> str:
    """Markdown of the requested claims; (a), (b) per dataset of ``trials``, (c) from ``skewed``.

    Each table draws its bootstrap resamples from its own ``default_rng(seed)``, so a
    table does not change when another is added.

    Args:
        trials: trials table (:func:`~eval.analysis.trials_table.read_trials`) for (a)
            and (b), or None.
        metric: primary metric column for (a) and (b).
        skewed: trials table of the skewed-set sweep for (c), or None.
        claims: which of "a", "b", "c" to render.
        circular: methods that selected in ``metric``'s feature space (marked).
        lower_is_better: direction of ``metric``.
        seed: bootstrap seed.
        n_boot: bootstrap resamples per mean.
        source: name of ``trials`` in error messages.
        skewed_source: name of ``skewed`` in error messages.
        skewed_circular: methods that selected in the space that labels the samples
            behind ``cov_kl_uniform`` (marked in (c)).
        balance_metric: the column of (c) (``cov_kl_uniform`` or a per-space name).

    Returns:
        The Markdown, tables separated by blank lines.

    Raises:
        ClaimsError: no metric for (a)/(b), a missing column or full-data baseline.
    """
    parts = []
    if trials is not None and {"a", "b"} & set(claims):
        if not metric:
            raise ClaimsError("a metric is required for claims (a) and (b)")
        _need(trials, metric, source)
        many = trials["dataset"].nunique() > 1
        for ds in dict.fromkeys(trials["dataset"]):
            sub = trials[trials["dataset"] == ds]
            for name, fn in (("a", claim_a), ("b", claim_b)):
                if name in claims:
                    parts.append(fn(sub, metric, circular, lower_is_better, np.random.default_rng(seed),
                                    n_boot, ds if many else None).markdown())
    if skewed is not None and "c" in claims:
        _need(skewed, balance_metric, skewed_source)
        parts.append(claim_c(skewed, skewed_circular, np.random.default_rng(seed), n_boot,
                             balance_metric).markdown())
    return "\n".join(parts)
