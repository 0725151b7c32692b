"""Significance of differences between per-seed results: Welch's t, Holm, bootstrap CIs, slopes.

Pure numpy/scipy. The inputs are per-seed values of one metric (one value per trial),
never aggregated means: a test needs the spread, and the degrees of freedom depend on
how many seeds each side has.

- :func:`welch_test`: Welch's unequal-variance t with Welch–Satterthwaite degrees of
  freedom and a two-sided p-value from Student's t distribution.
- :func:`holm`: Holm–Bonferroni step-down adjusted p-values across the comparisons of
  one family (one verdict table).
- :func:`bootstrap_ci`: percentile bootstrap interval of a mean, from an explicit
  ``numpy.random.Generator``.
- :func:`slope_test`: least-squares slope of a metric against the pruning ratio, its
  t-test against zero with n - 2 degrees of freedom.

Where no honest number exists (fewer than two values on a side, no variation at all)
the p-value is NaN and :attr:`WelchResult.reason` says why; nothing is made up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class WelchResult:
    """Welch's t-test of ``mean(a) - mean(b)``.

    Attributes:
        mean_diff: mean(a) - mean(b) over the finite values (NaN if a side is empty).
        t: Welch's t statistic (NaN when there is no test).
        df: Welch–Satterthwaite degrees of freedom (NaN when there is no test).
        p: two-sided p-value (NaN when there is no test).
        n_a: number of finite values in ``a``.
        n_b: number of finite values in ``b``.
        reason: why there is no test ("" when there is one).
    """

    mean_diff: float
    t: float
    df: float
    p: float
    n_a: int
    n_b: int
    reason: str = ""


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    return x[np.isfinite(x)]


def welch_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> WelchResult:
    """Welch's two-sample t-test (unequal variances), two-sided.

    ``t = (mean_a - mean_b) / sqrt(s_a^2/n_a + s_b^2/n_b)`` with sample variances
    (ddof = 1) and ``df = (s_a^2/n_a + s_b^2/n_b)^2 / ((s_a^2/n_a)^2/(n_a-1) +
    (s_b^2/n_b)^2/(n_b-1))``; ``p = 2 * P(T_df > |t|)``. Non-finite values (a failed
    metric) are dropped and the counts say how many were used.

    Args:
        a: (n_a,) per-seed values of the first group.
        b: (n_b,) per-seed values of the second group.

    Returns:
        A :class:`WelchResult`. With fewer than two finite values on a side, or when
        both sides are constant, ``t``, ``df`` and ``p`` are NaN and ``reason`` says why.
    """
    x, y = _finite(a), _finite(b)
    nx, ny = len(x), len(y)
    diff = float(x.mean() - y.mean()) if nx and ny else math.nan
    nan = math.nan
    if nx < 2 or ny < 2:
        return WelchResult(diff, nan, nan, nan, nx, ny,
                           f"fewer than 2 values per group (n = {nx} vs {ny})")
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        return WelchResult(diff, nan, nan, nan, nx, ny,
                           "no variation in either group (every value identical)")
    va, vb = x.var(ddof=1) / nx, y.var(ddof=1) / ny
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (nx - 1) + vb ** 2 / (ny - 1))
    p = float(2.0 * stats.t.sf(abs(t), df))
    return WelchResult(diff, float(t), float(df), min(p, 1.0), nx, ny)


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
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
    x = _finite(values)
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


@dataclass(frozen=True)
class SlopeResult:
    """Least-squares slope of ``y`` on ``x`` and its t-test against 0.

    Attributes:
        slope: OLS slope (NaN when there is no fit).
        se: its standard error, ``sqrt(SSE / (n - 2) / Sxx)``.
        t: ``slope / se``.
        df: ``n - 2``.
        p: two-sided p-value from Student's t with ``df`` degrees of freedom.
        ci: 95% t-interval of the slope.
        n: number of finite (x, y) pairs used.
        reason: why there is no test ("" when there is one).
    """

    slope: float
    se: float
    t: float
    df: float
    p: float
    ci: tuple[float, float]
    n: int
    reason: str = ""


def slope_test(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
               level: float = 0.95) -> SlopeResult:
    """Does ``y`` change linearly with ``x``? OLS slope, t = slope / se, df = n - 2.

    Assumes independent residuals of equal variance; pairs with a non-finite ``y`` are
    dropped.

    Args:
        x: (n,) predictor (e.g. the pruning ratio of each trial).
        y: (n,) response (e.g. one metric of each trial).
        level: confidence level of :attr:`SlopeResult.ci`.

    Returns:
        A :class:`SlopeResult`; with fewer than 3 pairs, one distinct ``x`` or a perfect
        fit, ``t``, ``p`` are NaN and ``reason`` says why.
    """
    xs, ys = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    ok = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[ok], ys[ok]
    n, nan = len(xs), math.nan
    if n < 3 or np.ptp(xs) == 0:
        return SlopeResult(nan, nan, nan, nan, nan, (nan, nan), n,
                           f"fewer than 3 trials or one ratio only (n = {n})")
    dx = xs - xs.mean()
    sxx = float(dx @ dx)
    slope = float(dx @ (ys - ys.mean()) / sxx)
    resid = ys - ys.mean() - slope * dx
    df = n - 2
    se = math.sqrt(float(resid @ resid) / df / sxx)
    if se == 0:
        return SlopeResult(slope, 0.0, nan, float(df), nan, (slope, slope), n,
                           "perfect fit: no residual variance")
    t = slope / se
    q = float(stats.t.ppf((1 + level) / 2, df))
    return SlopeResult(slope, se, t, float(df), min(1.0, float(2 * stats.t.sf(abs(t), df))),
                       (slope - q * se, slope + q * se), n)
