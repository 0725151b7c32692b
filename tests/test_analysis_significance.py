"""The one Welch t (eval.analysis.inference.welch_t), Holm (inference.holm) and the Welch
tables' bootstrap CI (eval.analysis.welch_tables.bootstrap_ci) against independent
computations."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest
from scipy import stats

from eval.analysis.inference import holm, welch_t
from eval.analysis.welch_tables import bootstrap_ci

CASES = [
    ([10.0, 12.0, 11.0], [7.0, 8.0]),
    ([1.0, 2.0, 3.0, 4.0, 5.0], [2.5, 2.7]),
    ([0.652, 0.664], [0.88, 0.762]),
    ([5.0, 5.0, 5.0], [1.0, 2.0, 4.0, 8.0]),        # one constant group: still a test
    (list(np.random.default_rng(3).normal(0, 1, 7)), list(np.random.default_rng(4).normal(1, 3, 4))),
]


def _reference(a, b):
    """Welch's t and df in plain float64 arithmetic (statistics.variance is ddof = 1)."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return t, df


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")   # scipy, constant group
@pytest.mark.parametrize("a,b", CASES)
def test_welch_matches_scipy_and_the_formula(a, b):
    r = welch_t(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    t, df = _reference(a, b)
    assert r.t == pytest.approx(t, rel=1e-12) and r.t == pytest.approx(ref.statistic, rel=1e-10)
    assert r.df == pytest.approx(df, rel=1e-12) and r.df == pytest.approx(ref.df, rel=1e-10)
    assert r.p == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-15)
    assert r.effect == pytest.approx(np.mean(a) - np.mean(b))
    assert (r.n, r.n_b, r.reason, r.test) == (len(a), len(b), "", "Welch t")
    swapped = welch_t(b, a)          # two-sided: symmetric
    assert swapped.t == pytest.approx(-r.t) and swapped.p == pytest.approx(r.p)


def test_welch_degrees_of_freedom_with_few_seeds():
    """Equal n and variances give df = 2(n - 1); 2 vs 2 seeds is df 2, not a normal test."""
    r = welch_t([1.0, 3.0], [5.0, 7.0])
    assert r.df == pytest.approx(2.0) and r.t == pytest.approx(-4 / math.sqrt(2))
    assert r.p == pytest.approx(2 * stats.t.sf(4 / math.sqrt(2), 2))
    assert r.p > 0.05                   # |t| = 2.83 > 2, yet not significant at df 2


@pytest.mark.parametrize("a,b,why", [
    ([1.0], [2.0, 3.0], "fewer than 2"),
    ([], [2.0, 3.0], "fewer than 2"),
    ([1.0, float("nan")], [2.0, 3.0], "fewer than 2"),
    ([2.0, 2.0], [3.0, 3.0, 3.0], "no variation"),
    ([2.0, 2.0], [2.0, 2.0], "no variation"),
    ([0.1, 0.1, 0.1], [0.7, 0.7, 0.7], "no variation"),   # float variances 1e-34, 1e-32: not a test
])
def test_welch_without_a_test_says_why(a, b, why):
    r = welch_t(a, b)
    assert math.isnan(r.t) and math.isnan(r.df) and math.isnan(r.p)
    assert why in r.reason
    if len([v for v in a if v == v]) and len(b):
        assert r.effect == pytest.approx(np.nanmean(a) - np.mean(b))
    else:
        assert math.isnan(r.effect)


def test_welch_drops_non_finite_values():
    r = welch_t([1.0, 2.0, float("nan"), 4.0], [5.0, 6.0, float("inf")])
    ref = stats.ttest_ind([1.0, 2.0, 4.0], [5.0, 6.0], equal_var=False)
    assert (r.n, r.n_b) == (3, 2) and r.p == pytest.approx(ref.pvalue)


def _holm_brute_force(p):
    """Adjusted p_i = min(1, max over p_j ranked at or before p_i of (m - rank_j + 1) p_j)."""
    m = len(p)
    order = sorted(range(m), key=lambda i: (p[i], i))
    rank = {i: r for r, i in enumerate(order, start=1)}
    return [min(1.0, max((m - rank[j] + 1) * p[j] for j in range(m) if rank[j] <= rank[i]))
            for i in range(m)]


def _holm_rejects(p, alpha):
    """Holm's step-down procedure: reject sorted p_(k) while p_(k) <= alpha / (m - k + 1)."""
    m = len(p)
    rejected = set()
    for k, i in enumerate(sorted(range(m), key=lambda i: p[i]), start=1):
        if p[i] > alpha / (m - k + 1):
            break
        rejected.add(i)
    return rejected


HOLM = [
    ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),
    ([0.5], [0.5]),
    ([0.2, 0.2, 0.2], [0.6, 0.6, 0.6]),
    ([0.001, 0.9, 0.3], [0.003, 0.9, 0.6]),
    ([0.04, 0.04], [0.08, 0.08]),
]


@pytest.mark.parametrize("p,want", HOLM)
def test_holm_hand_examples(p, want):
    got = holm(p)
    assert got == pytest.approx(want) and got == pytest.approx(_holm_brute_force(p))


def test_holm_equals_the_step_down_procedure_and_is_monotone():
    rng = np.random.default_rng(0)
    for m in (1, 2, 3, 5, 8):
        for _ in range(20):
            p = np.round(rng.uniform(0, 0.2, m) ** 2, 4)      # ties happen after rounding
            adj = holm(p)
            assert adj == pytest.approx(_holm_brute_force(list(p)))
            assert np.all(adj >= p) and np.all(adj <= 1)
            for i, j in itertools.product(range(m), repeat=2):
                if p[i] <= p[j]:
                    assert adj[i] <= adj[j] + 1e-15
            for alpha in (0.001, 0.01, 0.05, 0.1):
                assert set(np.flatnonzero(adj <= alpha)) == _holm_rejects(list(p), alpha)


def test_holm_ignores_nan_and_rejects_bad_input():
    got = holm([0.01, float("nan"), 0.04])
    assert math.isnan(got[1]) and got[[0, 2]] == pytest.approx([0.02, 0.04])
    assert np.isnan(holm([float("nan")])).all() and holm([]).shape == (0,)
    assert holm([0.9, 0.8, 0.7]).max() <= 1.0
    with pytest.raises(ValueError):
        holm([0.1, 1.5])


def test_holm_matches_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    rng = np.random.default_rng(1)
    for m in (2, 4, 9):
        p = rng.uniform(0, 0.1, m)
        assert holm(p) == pytest.approx(multitest.multipletests(p, method="holm")[1])


def test_bootstrap_ci_is_reproducible_and_brackets_the_mean():
    x = [108.3, 112.1, 104.6, 110.0, 99.5, 107.2]
    a = bootstrap_ci(x, np.random.default_rng(7), n_boot=2000)
    assert a == bootstrap_ci(x, np.random.default_rng(7), n_boot=2000)
    assert a != bootstrap_ci(x, np.random.default_rng(8), n_boot=2000)
    assert min(x) < a[0] < np.mean(x) < a[1] < max(x)
    # its ends are quantiles of the resampled means, computed here by enumeration
    means = np.sort([np.mean(c) for c in itertools.product(x, repeat=len(x))])
    lo, hi = np.quantile(means, [0.025, 0.975])
    assert a[0] == pytest.approx(lo, abs=0.3) and a[1] == pytest.approx(hi, abs=0.3)


def test_bootstrap_ci_of_three_seeds_is_their_range():
    """With 3 values the smallest resampled mean (all three draws the minimum) has
    probability 1/27 > 2.5%: the 95% interval is [min, max], nothing narrower."""
    x = [108.3, 112.1, 104.6]
    lo, hi = bootstrap_ci(x, np.random.default_rng(0), n_boot=5000)
    assert lo == pytest.approx(min(x)) and hi == pytest.approx(max(x))


def test_bootstrap_ci_covers_the_true_mean_at_about_the_nominal_rate():
    """Seeded simulation: normal samples of 30, 400 repetitions; percentile bootstrap
    undercovers slightly at this n, so the band is loose (deterministic, cannot flake)."""
    data_rng, boot_rng = np.random.default_rng(2024), np.random.default_rng(2025)
    hits = 0
    for _ in range(400):
        x = data_rng.normal(5.0, 2.0, 30)
        lo, hi = bootstrap_ci(x, boot_rng, n_boot=2000)
        hits += lo <= 5.0 <= hi
    assert 0.88 <= hits / 400 <= 0.98
    lo, hi = bootstrap_ci(data_rng.normal(5.0, 2.0, 30), boot_rng, n_boot=2000, level=0.5)
    lo95, hi95 = bootstrap_ci(data_rng.normal(5.0, 2.0, 30), boot_rng, n_boot=2000)
    assert hi - lo < hi95 - lo95


def test_bootstrap_ci_needs_two_values_and_a_generator():
    assert all(math.isnan(v) for v in bootstrap_ci([3.0], np.random.default_rng(0)))
    assert all(math.isnan(v) for v in bootstrap_ci([3.0, float("nan")], np.random.default_rng(0)))
    with pytest.raises(TypeError):
        bootstrap_ci([1.0, 2.0], 0)
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], np.random.default_rng(0), level=1.0)
