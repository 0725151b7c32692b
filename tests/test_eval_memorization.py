"""Memorization distances against a float64 brute force; a planted copy is detected;
the copy rate against a loop-level leave-one-out threshold."""

import numpy as np
import pytest

import eval.memorization
from eval import METRICS, MetricInputs
from eval.memorization import compute_memorization, copy_threshold, train_nn_distances


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


def _loo(x: np.ndarray) -> list[float]:
    """Loop-level distance of each row of x to its nearest other row (normalized, float64)."""
    u = _unit(x)
    return [min(np.linalg.norm(u[i] - u[j]) for j in range(len(u)) if j != i) for i in range(len(u))]


def brute_force(fake, train, train_full, centroids=None, q=0.05) -> dict[str, float]:
    full, _ = _nn(fake, train_full)
    loo = sorted(_loo(train_full))
    pos = q * (len(loo) - 1)                            # linear interpolation, by hand
    lo = int(np.floor(pos))
    thr = loo[lo] + (pos - lo) * (loo[min(lo + 1, len(loo) - 1)] - loo[lo])
    sub, idx = _nn(fake, train)
    t = _unit(train)
    copies = sum(d < min(np.linalg.norm(t[j] - t[i]) for i in range(len(t)) if i != j)
                 for d, j in zip(sub, idx))
    out = {"mem_nn_mean": np.mean(full), "mem_nn_median": np.median(full),
           "mem_copy_rate": sum(d < thr for d in full) / len(fake),
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
    assert exact == {"mem_nn_mean": 0.0, "mem_nn_median": 0.0, "mem_copy_rate": 1.0,
                     "mem_subset_nn_mean": 0.0,
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


@pytest.mark.parametrize("seed", [0, 1])
def test_train_nn_distances_match_a_leave_one_out_loop(seed, monkeypatch):
    _, _, train_full, _ = _data(seed)
    train_full[5] = train_full[9]                            # a duplicate: distance 0
    monkeypatch.setattr(eval.memorization, "_NORM_BLOCK", 7)  # many uneven blocks
    got = train_nn_distances(train_full)
    # float32 search: a near-tie (below float32 resolution) may pick the other neighbour
    np.testing.assert_allclose(got, _loo(train_full), rtol=0, atol=1e-7)
    assert got[5] == got[9] == 0.0
    np.testing.assert_allclose(train_nn_distances(2.0 * train_full.astype(np.float32)), got,
                               rtol=0, atol=1e-6)          # scale-free, float32 input


@pytest.mark.parametrize("q", [0.05, 0.2])
def test_copy_rate_matches_brute_force_and_the_analysis_formula(q):
    from eval.analysis.samples import copy_rate

    fake, train, train_full, _ = _data(7)
    got = compute_memorization(None, fake, train=train, train_full=train_full, copy_quantile=q)
    assert got["mem_copy_rate"] == pytest.approx(
        brute_force(fake, train, train_full, q=q)["mem_copy_rate"], abs=0)
    # the planted near-copies of _data (8 of 38 samples) count at the 5% threshold
    assert got["mem_copy_rate"] >= 8 / len(fake) if q == 0.05 else True
    full, _ = _nn(fake, train_full)                          # the analysis' own formula agrees
    assert got["mem_copy_rate"] == copy_rate(np.array(full), np.array(_loo(train_full)), q)
    # precomputed distances (the sweep's cached array) give the same number
    pre = compute_memorization(None, fake, train=train, train_full=train_full, copy_quantile=q,
                               train_nn=train_nn_distances(train_full))
    assert pre == got
    assert copy_threshold(np.array([0.0, 1.0, 2.0, 3.0, 4.0]), 0.25) == 1.0   # hand-computed
    with pytest.raises(ValueError, match="train_nn must have shape"):
        compute_memorization(None, fake, train=train, train_full=train_full, train_nn=np.ones(3))
    with pytest.raises(ValueError, match="quantile"):
        copy_threshold(np.ones(4), 1.0)
