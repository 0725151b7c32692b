"""Memorization distances against a float64 brute force; a planted copy is detected."""

import numpy as np
import pytest

import eval.memorization
from eval import METRICS, MetricInputs
from eval.memorization import compute_memorization


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _nn(fake: np.ndarray, base: np.ndarray) -> tuple[list[float], list[int]]:
    """Loop-level nearest neighbour of each fake row in base (normalized, float64)."""
    dist, idx = [], []
    for f in _unit(fake):
        d = [np.linalg.norm(f - b) for b in _unit(base)]
        idx.append(int(np.argmin(d)))
        dist.append(d[idx[-1]])
    return dist, idx


def brute_force(fake, train, train_full, centroids=None) -> dict[str, float]:
    full, _ = _nn(fake, train_full)
    sub, idx = _nn(fake, train)
    t = _unit(train)
    copies = sum(d < min(np.linalg.norm(t[j] - t[i]) for i in range(len(t)) if i != j)
                 for d, j in zip(sub, idx))
    out = {"mem_nn_mean": np.mean(full), "mem_nn_median": np.median(full),
           "mem_subset_nn_mean": np.mean(sub), "mem_subset_nn_median": np.median(sub),
           "mem_subset_copy_rate": copies / len(fake)}
    if centroids is not None:
        out["mem_centroid_nn_mean"] = np.mean(_nn(fake, centroids)[0])
    return out


def _data(seed: int):
    rng = np.random.default_rng(seed)
    train_full = rng.normal(size=(120, 6))
    train = train_full[rng.permutation(120)[:40]]
    fake = np.concatenate([rng.normal(size=(30, 6)), train[:5] + 0.01 * rng.normal(size=(5, 6)),
                           train_full[:3] + 0.01 * rng.normal(size=(3, 6))])
    return fake, train, train_full, rng.normal(size=(7, 6))


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force(seed):
    fake, train, train_full, cents = _data(seed)
    got = compute_memorization(None, fake, train=train, train_full=train_full, centroids=cents)
    want = brute_force(fake, train, train_full, cents)
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    # The full set contains the subset: its nearest neighbours can only be nearer.
    assert got["mem_nn_mean"] < got["mem_subset_nn_mean"]
    assert 0 < got["mem_subset_copy_rate"] < 1


def test_float32_input_and_blocked_normalization_match(monkeypatch):
    fake, train, train_full, cents = _data(2)
    want = brute_force(fake, train, train_full, cents)
    monkeypatch.setattr(eval.memorization, "_NORM_BLOCK", 7)  # many uneven blocks
    got = compute_memorization(None, fake, train=train, train_full=train_full.astype(np.float32),
                               centroids=cents)
    for key in ("mem_nn_mean", "mem_nn_median", "mem_centroid_nn_mean"):
        assert got[key] == pytest.approx(brute_force(
            fake, train, train_full.astype(np.float32), cents)[key], abs=1e-12), key
        assert got[key] == pytest.approx(want[key], abs=1e-6), key


def test_centroid_key_only_with_centroids():
    fake, train, train_full, _ = _data(3)
    got = compute_memorization(None, fake, train=train, train_full=train_full)
    assert "mem_centroid_nn_mean" not in got
    on_centre = compute_memorization(None, train_full[:4], train=train, train_full=train_full,
                                     centroids=train_full[:4] * 3.0)  # same directions
    assert on_centre["mem_centroid_nn_mean"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="centroids"):
        compute_memorization(None, fake, train=train, train_full=train_full,
                             centroids=np.ones((3, 5)))


def test_full_set_equals_subset_when_nothing_is_pruned():
    fake, _, train_full, _ = _data(4)
    got = compute_memorization(None, fake, train=train_full, train_full=train_full)
    assert got["mem_nn_mean"] == got["mem_subset_nn_mean"]
    assert got["mem_nn_median"] == got["mem_subset_nn_median"]


def test_planted_copies_are_detected():
    rng = np.random.default_rng(2)
    train = rng.normal(size=(100, 16))
    full = np.concatenate([train, rng.normal(size=(50, 16))])
    fresh = rng.normal(size=(40, 16))
    copies = train[[3, 17, 42]] + 1e-6 * rng.normal(size=(3, 16))
    base = compute_memorization(None, fresh, train=train, train_full=full)
    planted = compute_memorization(None, np.concatenate([fresh, copies]), train=train, train_full=full)
    # Exactly the three planted samples are added to the copy count.
    assert planted["mem_subset_copy_rate"] * 43 == pytest.approx(base["mem_subset_copy_rate"] * 40 + 3)
    assert planted["mem_nn_mean"] < base["mem_nn_mean"]
    exact = compute_memorization(None, train[:4], train=train, train_full=full)
    assert exact == {"mem_nn_mean": 0.0, "mem_nn_median": 0.0, "mem_subset_nn_mean": 0.0,
                     "mem_subset_nn_median": 0.0, "mem_subset_copy_rate": 1.0}


def test_distance_is_scale_free():
    rng = np.random.default_rng(3)
    train, fake, cents = rng.normal(size=(30, 4)), rng.normal(size=(20, 4)), rng.normal(size=(3, 4))
    full = np.concatenate([train, rng.normal(size=(10, 4))])
    assert compute_memorization(None, 7.0 * fake, train=0.1 * train, train_full=3.0 * full,
                                centroids=0.5 * cents) == pytest.approx(
        compute_memorization(None, fake, train=train, train_full=full, centroids=cents))


def test_zero_rows_are_rejected_by_name():
    fake, train, train_full, _ = _data(5)
    train_full[7] = 0.0
    with pytest.raises(ValueError, match="train_full contains all-zero rows"):
        compute_memorization(None, fake, train=train, train_full=train_full)


def test_metric_adapter_passes_full_set_and_centroids():
    fake, train, train_full, cents = _data(6)
    inputs = MetricInputs(real=train_full, fake=fake, train=train, train_full=train_full,
                          centroids=cents)
    assert METRICS["memorization"](inputs) == compute_memorization(
        None, fake, train=train, train_full=train_full, centroids=cents)
    with pytest.raises(ValueError, match="train_full"):
        METRICS["memorization"](MetricInputs(real=train_full, fake=fake, train=train))
