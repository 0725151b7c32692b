"""Vendi score: known values, Gram path against the N x N kernel, orders q."""

import math

import numpy as np
import pytest

from eval.vendi import compute_vendi, kernel_eigenvalues, vendi_score

ORDERS = [0.5, 1.0, 2.0, math.inf]


def reference_vendi(x: np.ndarray, q: float) -> float:
    """Float64 definition: eigenvalues of the N x N cosine kernel divided by N."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    k = np.array([[x[i] @ x[j] for j in range(len(x))] for i in range(len(x))])
    lam = np.linalg.eigvalsh(k / len(x))
    lam = lam[lam > 1e-12]
    if q == 1:
        return math.exp(-np.sum(lam * np.log(lam)))
    if math.isinf(q):
        return 1.0 / lam.max()
    return np.sum(lam**q) ** (1.0 / (1.0 - q))


@pytest.mark.parametrize("q", ORDERS)
def test_k_orthogonal_points_give_k(q):
    # Small N (N x N path) and many repeats (N > D, Gram path) of the same 4 directions.
    basis = np.eye(6)[:4] * np.array([[1.0], [3.0], [0.5], [2.0]])  # scale is ignored
    assert vendi_score(basis, q) == pytest.approx(4.0, rel=1e-10)
    repeated = np.repeat(basis, 25, axis=0)  # (100, 6): N > D
    assert vendi_score(repeated[:, :4], q) == pytest.approx(4.0, rel=1e-10)


@pytest.mark.parametrize("q", ORDERS)
def test_identical_points_give_one(q):
    x = np.tile(np.random.default_rng(0).normal(size=(1, 7)), (30, 1))
    assert vendi_score(x, q) == pytest.approx(1.0, rel=1e-10)


@pytest.mark.parametrize("q", ORDERS)
def test_gram_path_equals_kernel_path(q):
    x = np.random.default_rng(1).normal(size=(200, 16))
    gram = vendi_score(x, q, use_gram=True)
    kernel = vendi_score(x, q, use_gram=False)
    assert gram == pytest.approx(kernel, abs=1e-8)
    assert gram == pytest.approx(reference_vendi(x, q), abs=1e-8)
    assert 1.0 < gram < 16.0


def test_eigenvalues_sum_to_one_and_q0_counts_rank():
    x = np.random.default_rng(2).normal(size=(50, 3)) @ np.random.default_rng(3).normal(size=(3, 10))
    eig = kernel_eigenvalues(x)
    assert eig.sum() == pytest.approx(1.0, abs=1e-12)
    assert vendi_score(x, q=0) == pytest.approx(3.0)


def test_orders_are_monotone():
    # Renyi entropies decrease with q, so Vendi does too.
    x = np.random.default_rng(4).normal(size=(120, 8)) + 0.5
    values = [vendi_score(x, q) for q in (0.5, 1.0, 2.0, math.inf)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_compute_vendi_uses_fake_and_rejects_zero_rows():
    rng = np.random.default_rng(5)
    fake = rng.normal(size=(40, 5))
    assert compute_vendi(rng.normal(size=(10, 5)), fake) == {"vendi": vendi_score(fake)}
    with pytest.raises(ValueError, match="all-zero"):
        vendi_score(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="q must be"):
        vendi_score(fake, q=-1)
