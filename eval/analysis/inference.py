"""The tests of the pre-registered analysis, with the seed as the unit.

Pure numpy/scipy. Every function takes per-seed values (one number per trial) and
returns a :class:`TestResult` that carries the effect, its t-interval, the p-value, the
degrees of freedom and the minimal detectable effect (MDE) of the design:

- :func:`one_sample_t`: mean against 0, ``df = n - 1`` (the base of the next two).
- :func:`paired_t`: ``a[i] - b[i]`` per seed (same seed = same initial weights and data
  order), ``df = n_pairs - 1``.
- :func:`welch_t`: unpaired, Welch–Satterthwaite ``df``.
- :func:`tost`: equivalence within ``±margin`` by two one-sided tests (paired or Welch),
  and the one-sided test that the effect lies beyond the margin on the worse side.
- :func:`seed_slopes`: one OLS slope of the metric on the ratio per seed, then a
  one-sample t of the slopes, ``df = n_seeds - 1``.
- :func:`holm`: Holm–Bonferroni adjusted p-values over one family of comparisons.

MDE of a two-sided test at level ``alpha`` and power ``power``:
``(t_{1-alpha/2, df} + t_{power, df}) * se``, ``se`` the standard error of the effect.
For :func:`tost` the MDE is the smallest margin the design can establish equivalence
for with that power when the true difference is 0: ``(t_{1-alpha, df} +
t_{1-(1-power)/2, df}) * se``. Where no honest number exists (fewer than two values,
no variation) the statistics are NaN and ``reason`` says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

ArrayLike = Sequence[float] | np.ndarray
NAN = math.nan


@dataclass(frozen=True)
class TestResult:
    """One test of one comparison.

    Attributes:
        test: "one-sample t", "paired t", "Welch t", "TOST paired", "TOST Welch" or
            "per-seed slopes".
        effect: the estimate (mean difference ``a - b``, or mean per-seed slope).
        ci: two-sided ``level`` t-interval of ``effect``.
        t: the t statistic against 0 (TOST: against 0 as well, for reference).
        df: degrees of freedom.
        p: two-sided p against 0; TOST: ``max`` of its two one-sided p-values.
        se: standard error of ``effect``.
        mde: minimal detectable effect (TOST: smallest establishable margin).
        n: pairs, seeds, or the first group's size (Welch).
        n_b: the second group's size (Welch; 0 otherwise).
        p_worse: TOST only: one-sided p that the effect lies beyond the margin on the
            worse side (NaN otherwise).
        p_better: TOST only: the same on the better side.
        reason: why there is no test ("" when there is one).
    """

    test: str
    effect: float
    ci: tuple[float, float]
    t: float
    df: float
    p: float
    se: float
    mde: float
    n: int
    n_b: int = 0
    p_worse: float = NAN
    p_better: float = NAN
    reason: str = ""


def _finite(x: ArrayLike) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64).ravel()
    return v[np.isfinite(v)]


def mde(se: float, df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true effect a two-sided t-test at ``alpha`` detects with ``power``.

    Args:
        se: standard error of the effect.
        df: degrees of freedom of the test.
        alpha: two-sided level.
        power: wanted power in (0, 1).

    Returns:
        ``(t_{1-alpha/2,df} + t_{power,df}) * se`` (NaN when ``se`` or ``df`` is not finite).
    """
    if not (math.isfinite(se) and math.isfinite(df) and df > 0):
        return NAN
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * se)


def tost_mde(se: float, df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest margin TOST at ``alpha`` establishes with ``power`` when the truth is 0.

    Args:
        se: standard error of the effect.
        df: degrees of freedom.
        alpha: level of each one-sided test.
        power: wanted power in (0, 1).

    Returns:
        ``(t_{1-alpha,df} + t_{1-(1-power)/2,df}) * se`` (NaN without a finite se/df).
    """
    if not (math.isfinite(se) and math.isfinite(df) and df > 0):
        return NAN
    return float((stats.t.ppf(1 - alpha, df) + stats.t.ppf(1 - (1 - power) / 2, df)) * se)


def _from_se(test: str, effect: float, se: float, df: float, n: int, n_b: int,
             alpha: float, power: float, level: float) -> TestResult:
    if se == 0:
        return TestResult(test, effect, (effect, effect), NAN, df, NAN, 0.0, NAN, n, n_b,
                          reason="no variation (every value identical)")
    t = effect / se
    q = float(stats.t.ppf((1 + level) / 2, df))
    return TestResult(test, effect, (effect - q * se, effect + q * se), float(t), float(df),
                      min(1.0, float(2 * stats.t.sf(abs(t), df))), float(se),
                      mde(se, df, alpha, power), n, n_b)


def one_sample_t(x: ArrayLike, alpha: float = 0.05, power: float = 0.8,
                 level: float = 0.95, test: str = "one-sample t") -> TestResult:
    """Is the mean of ``x`` different from 0? ``t = mean / (sd / sqrt(n))``, ``df = n - 1``.

    Args:
        x: (n,) values; non-finite ones are dropped.
        alpha, power: the MDE's level and power.
        level: confidence level of the interval.
        test: the name recorded in the result.

    Returns:
        A :class:`TestResult`; with fewer than two values, NaN statistics and a reason.
    """
    v = _finite(x)
    n = len(v)
    if n < 2:
        eff = float(v.mean()) if n else NAN
        return TestResult(test, eff, (NAN, NAN), NAN, NAN, NAN, NAN, NAN, n,
                          reason=f"fewer than 2 values (n = {n})")
    return _from_se(test, float(v.mean()), float(v.std(ddof=1) / math.sqrt(n)), n - 1, n, 0,
                    alpha, power, level)


def paired_differences(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """(n,) ``a - b`` over the pairs where both are finite (same length, same seed order)."""
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired values need equal lengths, got {x.shape} and {y.shape}")
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok] - y[ok]


def paired_t(a: ArrayLike, b: ArrayLike, alpha: float = 0.05, power: float = 0.8,
             level: float = 0.95) -> TestResult:
    """Paired t of ``a - b``: pairs are seeds, ``df = n_pairs - 1``.

    Args:
        a: (n,) the method's per-seed values.
        b: (n,) the comparator's values at the same seeds, same order.
        alpha, power, level: as :func:`one_sample_t`.

    Returns:
        A :class:`TestResult` (``test = "paired t"``); equal to
        ``scipy.stats.ttest_rel(a, b)`` in t and p.
    """
    return one_sample_t(paired_differences(a, b), alpha, power, level, "paired t")


def welch_t(a: ArrayLike, b: ArrayLike, alpha: float = 0.05, power: float = 0.8,
            level: float = 0.95) -> TestResult:
    """Welch's unpaired t of ``mean(a) - mean(b)`` with Welch–Satterthwaite df.

    ``t = (mean_a - mean_b) / sqrt(s_a^2/n_a + s_b^2/n_b)`` with sample variances
    (ddof = 1), ``df = (s_a^2/n_a + s_b^2/n_b)^2 / ((s_a^2/n_a)^2/(n_a-1) +
    (s_b^2/n_b)^2/(n_b-1))``, ``p = 2 * P(T_df > |t|)``. Non-finite values (a failed
    metric) are dropped; ``n`` and ``n_b`` say how many were used. The one Welch test of
    the project: the analysis, the report's Welch tables
    (:mod:`eval.analysis.welch_tables`) and ``python -m orchestrator.compare`` use it.

    Args:
        a: (n_a,) values of the first group; b: (n_b,) of the second.
        alpha, power, level: as :func:`one_sample_t`.

    Returns:
        A :class:`TestResult` (``test = "Welch t"``); equal to
        ``scipy.stats.ttest_ind(a, b, equal_var=False)`` in t and p. With fewer than two
        finite values on a side, or both sides constant, t, df and p are NaN and
        ``reason`` says why.
    """
    x, y = _finite(a), _finite(b)
    na, nb = len(x), len(y)
    eff = float(x.mean() - y.mean()) if na and nb else NAN
    if na < 2 or nb < 2:
        return TestResult("Welch t", eff, (NAN, NAN), NAN, NAN, NAN, NAN, NAN, na, nb,
                          reason=f"fewer than 2 values per group (n = {na} vs {nb})")
    va, vb = x.var(ddof=1) / na, y.var(ddof=1) / nb
    # ptp, not only the variances: a constant float group can have a variance of 1e-30
    if (np.ptp(x) == 0 and np.ptp(y) == 0) or va + vb == 0:
        return TestResult("Welch t", eff, (eff, eff), NAN, NAN, NAN, 0.0, NAN, na, nb,
                          reason="no variation in either group (every value identical)")
    df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    return _from_se("Welch t", eff, math.sqrt(va + vb), df, na, nb, alpha, power, level)


def tost(a: ArrayLike, b: ArrayLike, margin: float, lower_is_better: bool, paired: bool = True,
         alpha: float = 0.05, power: float = 0.8, level: float = 0.95) -> TestResult:
    """Equivalence of ``a`` and ``b`` within ``±margin``: two one-sided tests.

    With ``d`` the effect ``a - b`` and ``se`` its standard error (paired or Welch):
    ``p_low = P(T > (d + margin) / se)`` tests H0 ``delta <= -margin``,
    ``p_up = P(T < (d - margin) / se)`` tests H0 ``delta >= margin``; equivalence at
    ``alpha`` when ``p = max(p_low, p_up) < alpha``. ``p_worse`` is the one-sided p of
    "the effect lies beyond the margin on the worse side" (``a`` worse than ``b`` by
    more than ``margin``), ``p_better`` the same on the better side.

    Args:
        a: the method's per-seed values; b: the comparator's (same seeds when paired).
        margin: equivalence margin in the metric's units, > 0.
        lower_is_better: direction of the metric (decides which side is worse).
        paired: paired by seed (else Welch).
        alpha, power, level: as :func:`one_sample_t`; ``mde`` is :func:`tost_mde`.

    Returns:
        A :class:`TestResult` with ``p`` the TOST p and ``p_worse`` / ``p_better``.

    Raises:
        ValueError: ``margin`` is not positive.
    """
    if not margin > 0:
        raise ValueError(f"margin must be positive, got {margin}")
    base = paired_t(a, b, alpha, power, level) if paired else welch_t(a, b, alpha, power, level)
    name = "TOST paired" if paired else "TOST Welch"
    if not (math.isfinite(base.se) and base.se > 0):
        return TestResult(name, base.effect, base.ci, NAN, base.df, NAN, base.se, NAN,
                          base.n, base.n_b, reason=base.reason or "no standard error")
    d, se, df = base.effect, base.se, base.df
    p_low = float(stats.t.sf((d + margin) / se, df))     # H1: delta > -margin
    p_up = float(stats.t.cdf((d - margin) / se, df))     # H1: delta < +margin
    p_above = float(stats.t.sf((d - margin) / se, df))   # H1: delta > +margin
    p_below = float(stats.t.cdf((d + margin) / se, df))  # H1: delta < -margin
    worse, better = (p_above, p_below) if lower_is_better else (p_below, p_above)
    return TestResult(name, d, base.ci, base.t, df, max(p_low, p_up), se,
                      tost_mde(se, df, alpha, power), base.n, base.n_b, worse, better)


def ols_slope(x: ArrayLike, y: ArrayLike) -> float:
    """Least-squares slope of ``y`` on ``x`` over finite pairs (NaN with < 2 distinct x)."""
    xs, ys = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    ok = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[ok], ys[ok]
    if len(xs) < 2 or np.ptp(xs) == 0:
        return NAN
    dx = xs - xs.mean()
    return float(dx @ (ys - ys.mean()) / (dx @ dx))


def seed_slopes(x: ArrayLike, y: ArrayLike, seeds: ArrayLike, alpha: float = 0.05,
                power: float = 0.8, level: float = 0.95) -> tuple[TestResult, dict[int, float]]:
    """Trend with the seed as the unit: one OLS slope per seed, then a one-sample t.

    Each seed has its own proxy, k-means and permutation, so its trials share an
    offset and a slope; pooling the trials would count them as independent.

    Args:
        x: (n,) the ratio of each trial (the full-data trials at 0 included).
        y: (n,) the metric of each trial.
        seeds: (n,) the seed of each trial.
        alpha, power, level: as :func:`one_sample_t`.

    Returns:
        (result, {seed: slope}); ``result.test = "per-seed slopes"``, ``df = n_seeds - 1``
        over the seeds with a slope (at least two distinct ratios).
    """
    s = np.asarray(seeds).ravel()
    xs, ys = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if not (len(s) == len(xs) == len(ys)):
        raise ValueError(f"x, y, seeds need equal lengths, got {len(xs)}, {len(ys)}, {len(s)}")
    slopes = {int(k): ols_slope(xs[s == k], ys[s == k]) for k in dict.fromkeys(s.tolist())}
    slopes = {k: v for k, v in slopes.items() if math.isfinite(v)}
    return one_sample_t(list(slopes.values()), alpha, power, level, "per-seed slopes"), slopes


def holm(pvalues: ArrayLike) -> np.ndarray:
    """Holm–Bonferroni step-down adjusted p-values for one family of comparisons.

    With the m finite p-values sorted ascending, ``p_(1) <= ... <= p_(m)``, the adjusted
    value of the i-th is ``min(1, max_{j <= i} (m - j + 1) p_(j))``: monotone in the raw
    p-value and capped at 1. Rejecting where the adjusted value is below alpha is Holm's
    procedure at family-wise error rate alpha. NaN entries (comparisons without a test)
    stay NaN and do not count in m.

    Args:
        pvalues: (m,) raw p-values in [0, 1] or NaN.

    Returns:
        (m,) float64 adjusted p-values, NaN where the input was NaN.

    Raises:
        ValueError: a p-value outside [0, 1] or an infinite one.
    """
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    ok = ~np.isnan(p)
    if np.any(~np.isfinite(p[ok])) or np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError(f"p-values must lie in [0, 1] or be NaN, got {p[ok].tolist()}")
    out = np.full(p.shape, np.nan)
    q = p[ok]
    m = len(q)
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")
    adj = np.maximum.accumulate((m - np.arange(m)) * q[order])
    back = np.empty(m)
    back[order] = np.minimum(adj, 1.0)
    out[ok] = back
    return out
