"""Memorization distances against brute force; a planted copy is detected."""

import numpy as np
import pytest

from eval.memorization import compute_memorization


def brute_force(fake: np.ndarray, train: np.ndarray) -> dict[str, float]:
    fake = fake / np.linalg.norm(fake, axis=1, keepdims=True)
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    nn, copies = [], 0
    for f in fake:
        d = [np.linalg.norm(f - t) for t in train]
        j = int(np.argmin(d))
        gap = min(np.linalg.norm(train[j] - t) for i, t in enumerate(train) if i != j)
        nn.append(d[j])
        copies += d[j] < gap
    return {"mem_nn_mean": np.mean(nn), "mem_nn_median": np.median(nn), "mem_copy_rate": copies / len(fake)}


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(60, 6))
    fake = np.concatenate([rng.normal(size=(30, 6)), train[:5] + 0.01 * rng.normal(size=(5, 6))])
    got = compute_memorization(None, fake, train=train)
    want = brute_force(fake, train)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_planted_copies_are_detected():
    rng = np.random.default_rng(2)
    train = rng.normal(size=(100, 16))
    fresh = rng.normal(size=(40, 16))
    copies = train[[3, 17, 42]] + 1e-6 * rng.normal(size=(3, 16))
    base = compute_memorization(None, fresh, train=train)
    planted = compute_memorization(None, np.concatenate([fresh, copies]), train=train)
    # Exactly the three planted samples are added to the copy count.
    assert planted["mem_copy_rate"] * 43 == pytest.approx(base["mem_copy_rate"] * 40 + 3)
    assert planted["mem_nn_mean"] < base["mem_nn_mean"]
    exact = compute_memorization(None, train[:4], train=train)
    assert exact == {"mem_nn_mean": 0.0, "mem_nn_median": 0.0, "mem_copy_rate": 1.0}


def test_distance_is_scale_free():
    rng = np.random.default_rng(3)
    train, fake = rng.normal(size=(30, 4)), rng.normal(size=(20, 4))
    assert compute_memorization(None, 7.0 * fake, train=0.1 * train) == pytest.approx(
        compute_memorization(None, fake, train=train)
    )
