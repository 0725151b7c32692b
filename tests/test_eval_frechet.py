"""Frechet distance: closed forms, self-distance, agreement with clean-fid and scipy."""

import numpy as np
import pytest
import scipy.linalg
from cleanfid.fid import frechet_distance as cleanfid_frechet

from eval.frechet import compute_fd, frechet_distance, frechet_distance_from_samples, gaussian_stats


def random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, 2 * d))
    return a @ a.T / (2 * d) + 0.05 * np.eye(d)


def test_fd_of_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(300, 12))
    assert compute_fd(x, x)["fd"] == pytest.approx(0.0, abs=1e-9)


def test_diagonal_gaussians_match_closed_form():
    rng = np.random.default_rng(1)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 3.0, size=d), rng.uniform(0.1, 3.0, size=d)
    # Commuting (diagonal) covariances: tr sqrt(S1 S2) = sum sqrt(a_i b_i).
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_samples_of_two_gaussians_approach_closed_form():
    rng = np.random.default_rng(2)
    d, n = 4, 40000
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(n, d)) * 2.0 + 1.0
    # N(0, I) vs N(1, 4I): |1|^2 * d + d * (1 - 2)^2 = 2d.
    assert compute_fd(x, y)["fd"] == pytest.approx(2.0 * d, rel=0.03)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_cleanfid_and_scipy_sqrtm(seed):
    rng = np.random.default_rng(seed)
    d = 32
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    ours = frechet_distance(mu1, s1, mu2, s2)
    theirs = cleanfid_frechet(mu1, s1, mu2, s2)
    # Independent float64 formula through scipy's general (non-symmetric) sqrtm.
    direct = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
    assert ours == pytest.approx(theirs, rel=1e-9)
    assert ours == pytest.approx(direct, rel=1e-9)


def test_rank_deficient_covariances_stay_real_and_close_to_zero_for_same_set():
    # N < D: singular covariances, where sqrtm of S1 S2 is numerically fragile.
    x = np.random.default_rng(3).normal(size=(20, 64))
    mu, s = gaussian_stats(x)
    value = frechet_distance(mu, s, mu, s)
    assert np.isfinite(value) and value == pytest.approx(0.0, abs=1e-8)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


@pytest.mark.parametrize("n,m,d,rel", [(20, 30, 64, 1e-7), (15, 15, 40, 1e-7), (200, 150, 8, 1e-10),
                                       (120, 20, 64, 1e-7)])   # N > D > M: the quickstart's shape
def test_sample_form_equals_covariance_form(n, m, d, rel):
    # Singular covariances (n < d) cost the D x D form ~1e-8: sqrt of eigenvalues that
    # should be 0 but are rounding noise ~1e-16 adds ~1e-8 each; the sample form has none.
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(m, d)) * 1.5 + 0.1
    mu1, s1 = gaussian_stats(x)
    mu2, s2 = gaussian_stats(y)
    expected = frechet_distance(mu1, s1, mu2, s2)
    assert frechet_distance_from_samples(x, y) == pytest.approx(expected, rel=rel)
    assert compute_fd(x, y)["fd"] == pytest.approx(expected, rel=rel)
