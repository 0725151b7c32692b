"""eval.analysis.inference: each test against a case worked by hand (numbers written here)
and against scipy's own implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from eval.analysis.inference import (holm, mde, one_sample_t, paired_t, seed_slopes, tost,
                                     tost_mde, welch_t)

# d = a - b = [1, 2, 0.5, 2]: mean 1.375, sd 0.75, se 0.375, t = 3.6667, df = 3
A = [3.0, 5.0, 4.0, 6.0]
B = [2.0, 3.0, 3.5, 4.0]
T975_3, T80_3, T95_3 = 3.182446305284263, 0.9784723123633045, 2.353363434801823


def test_paired_t_by_hand():
    r = paired_t(A, B)
    assert r.test == "paired t" and r.n == 4 and r.df == 3
    assert r.effect == pytest.approx(1.375)
    assert r.se == pytest.approx(0.375)
    assert r.t == pytest.approx(1.375 / 0.375)
    assert r.p == pytest.approx(0.03508, abs=5e-5)       # 2 * P(T_3 > 3.6667)
    assert r.ci == pytest.approx((1.375 - T975_3 * 0.375, 1.375 + T975_3 * 0.375))
    assert r.mde == pytest.approx((T975_3 + T80_3) * 0.375)  # 1.5603
    ref = stats.ttest_rel(A, B)
    assert (r.t, r.p) == pytest.approx((ref.statistic, ref.pvalue))


def test_paired_t_drops_incomplete_pairs_and_says_why_without_a_test():
    r = paired_t([*A, np.nan], [*B, 1.0])
    assert r.n == 4 and r.effect == pytest.approx(1.375)
    none = paired_t([1.0, 2.0], [0.0, 1.0])                  # identical differences
    assert math.isnan(none.p) and "no variation" in none.reason
    one = paired_t([1.0], [0.0])
    assert math.isnan(one.p) and "fewer than 2" in one.reason
    with pytest.raises(ValueError, match="equal lengths"):
        paired_t([1.0, 2.0], [1.0])


def test_welch_t_matches_scipy():
    a, b = [1.0, 2.0, 4.0, 7.0], [2.0, 2.5, 3.0]
    r = welch_t(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert (r.t, r.p) == pytest.approx((ref.statistic, ref.pvalue))
    va, vb = np.var(a, ddof=1) / 4, np.var(b, ddof=1) / 3
    assert r.df == pytest.approx((va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2))
    assert r.se == pytest.approx(math.sqrt(va + vb)) and (r.n, r.n_b) == (4, 3)


def test_one_sample_t_matches_scipy():
    x = [0.3, -0.1, 0.8, 0.4, 0.2]
    r, ref = one_sample_t(x), stats.ttest_1samp(x, 0.0)
    assert (r.t, r.p, r.df) == pytest.approx((ref.statistic, ref.pvalue, 4))


def test_tost_equivalent_by_hand():
    # margin 2.5: t_low = (1.375 + 2.5) / 0.375 = 10.33, t_up = (1.375 - 2.5) / 0.375 = -3;
    # p = max(P(T_3 > 10.33), P(T_3 < -3)) = P(T_3 > 3) = 0.028834
    r = tost(A, B, margin=2.5, lower_is_better=True)
    assert r.test == "TOST paired" and r.df == 3
    assert r.p == pytest.approx(0.028834, abs=2e-6)
    d = np.subtract(A, B)
    assert r.p == pytest.approx(stats.ttest_1samp(d, 2.5, alternative="less").pvalue)
    assert r.mde == pytest.approx((T95_3 + stats.t.ppf(0.9, 3)) * 0.375)
    assert r.mde == pytest.approx(tost_mde(0.375, 3))


def test_tost_worse_beyond_the_margin_by_hand():
    # margin 0.25, lower is better: worse = delta > 0.25; t = (1.375 - 0.25) / 0.375 = 3
    r = tost(A, B, margin=0.25, lower_is_better=True)
    assert r.p_worse == pytest.approx(0.028834, abs=2e-6)
    assert r.p > 0.5 and r.p_better > 0.98   # P(T_3 < 4.33)
    # higher is better: the same positive effect is better beyond the margin
    h = tost(A, B, margin=0.25, lower_is_better=False)
    assert h.p_better == pytest.approx(0.028834, abs=2e-6) and h.p_worse > 0.98
    with pytest.raises(ValueError, match="margin"):
        tost(A, B, margin=0.0, lower_is_better=True)


def test_tost_welch_matches_two_one_sided_welch_tests():
    a, b, m = [1.0, 1.2, 0.9, 1.1], [1.05, 0.95, 1.0], 0.3
    r = tost(a, b, m, lower_is_better=True, paired=False)
    lo = stats.ttest_ind(np.add(a, m), b, equal_var=False, alternative="greater").pvalue
    up = stats.ttest_ind(np.subtract(a, m), b, equal_var=False, alternative="less").pvalue
    assert r.test == "TOST Welch" and r.p == pytest.approx(max(lo, up))


def test_seed_slopes_by_hand():
    # ratios 0, 0.25, 0.5 per seed: slope = 2 (y(0.5) - y(0)); slopes 2, 3, 1
    x = [0, 0.25, 0.5] * 3
    y = [1.0, 1.5, 2.0, 0.0, 0.2, 1.5, 2.0, 2.0, 2.5]
    seeds = [0] * 3 + [1] * 3 + [2] * 3
    r, slopes = seed_slopes(x, y, seeds)
    assert slopes == pytest.approx({0: 2.0, 1: 3.0, 2: 1.0})
    assert (r.test, r.n, r.df) == ("per-seed slopes", 3, 2)
    assert r.effect == pytest.approx(2.0) and r.se == pytest.approx(1 / math.sqrt(3))
    assert r.t == pytest.approx(2 * math.sqrt(3))
    assert r.p == pytest.approx(0.07418, abs=5e-5)
    assert r.p == pytest.approx(stats.ttest_1samp([2.0, 3.0, 1.0], 0.0).pvalue)


def test_seed_slopes_count_seeds_not_trials():
    # 3 seeds x 4 ratios: pooled OLS would have df = 10; the seed as unit gives df = 2
    rng = np.random.default_rng(0)
    x = np.tile([0.0, 0.25, 0.5, 0.9], 3)
    seeds = np.repeat([0, 1, 2], 4)
    y = rng.normal(size=12) + seeds * 5.0
    r, slopes = seed_slopes(x, y, seeds)
    assert r.df == 2 and len(slopes) == 3


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = holm([0.2, np.nan, 0.01])
    assert out[0] == pytest.approx(0.2) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)


def test_mde_has_its_power():
    # the exact power of a two-sided t at the MDE (noncentral t) is close to the stated 0.8
    df, se = 9, 1.0
    effect = mde(se, df, 0.05, 0.8)
    crit, nc = stats.t.ppf(0.975, df), effect / se
    power = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
    assert power == pytest.approx(0.8, abs=0.03)
    assert math.isnan(mde(math.nan, 3)) and math.isnan(mde(1.0, 0))


def _public():
    import inspect

    import eval.analysis as pkg
    return [getattr(pkg, n) for n in pkg.__all__ if inspect.isfunction(getattr(pkg, n))]


@pytest.mark.parametrize("fn", _public(), ids=lambda f: f.__name__)
def test_docstring_names_every_parameter(fn):
    import inspect

    doc = inspect.getdoc(fn) or ""
    assert "Args:" in doc and "Returns:" in doc, fn.__name__
    for name in inspect.signature(fn).parameters:
        assert f"{name}:" in doc or f"{name}," in doc, f"{fn.__name__} does not document {name!r}"
