"""cluster_coverage by hand, nearest-neighbour labels, and the METRICS registry contract."""

import math

import numpy as np
import pytest

from eval import METRICS, MetricInputs
from eval.coverage import balanced_indices, compute_cluster_coverage, nearest_neighbour_labels

EXPECTED_KEYS = {
    "fd": {"fd"},
    "prdc": {"precision", "recall", "density", "coverage", "f_score"},
    "vendi": {"vendi"},
    "memorization": {"mem_nn_mean", "mem_nn_median", "mem_copy_rate", "mem_subset_nn_mean",
                     "mem_subset_nn_median", "mem_subset_copy_rate"},
    "cluster_coverage": {"cov_kl_uniform", "cov_kl_train", "cov_share_0", "cov_share_1", "cov_share_2"},
}


def test_hand_computation():
    fake_labels = np.array([0, 0, 1, 2, 2, 2])
    ref_labels = np.array([0, 1, 1, 2, -1])  # -1: unlabelled, ignored
    got = compute_cluster_coverage(None, None, fake_labels=fake_labels, reference_labels=ref_labels)
    p = [2 / 6, 1 / 6, 3 / 6]
    q = [1 / 4, 2 / 4, 1 / 4]
    assert got["cov_share_0"] == pytest.approx(p[0])
    assert got["cov_share_1"] == pytest.approx(p[1])
    assert got["cov_share_2"] == pytest.approx(p[2])
    assert got["cov_kl_uniform"] == pytest.approx(sum(pi * math.log(pi * 3) for pi in p))
    assert got["cov_kl_train"] == pytest.approx(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)))


def test_uniform_generation_has_zero_kl_and_missing_class_is_inf():
    got = compute_cluster_coverage(None, None, fake_labels=np.array([0, 1, 2, 3]), num_classes=4)
    assert got["cov_kl_uniform"] == 0.0 and "cov_kl_train" not in got
    got = compute_cluster_coverage(
        None, None, fake_labels=np.array([0, 1]), reference_labels=np.array([0, 0]), num_classes=2
    )
    assert got["cov_kl_train"] == math.inf


def test_centroid_assignment_matches_brute_force():
    rng = np.random.default_rng(0)
    cents = rng.normal(size=(4, 3)) * 5
    real, fake = rng.normal(size=(40, 3)) * 4, rng.normal(size=(30, 3)) * 4
    got = compute_cluster_coverage(real, fake, centroids=cents)
    fl = np.argmin(((fake[:, None] - cents[None]) ** 2).sum(-1), axis=1)
    rl = np.argmin(((real[:, None] - cents[None]) ** 2).sum(-1), axis=1)
    want = compute_cluster_coverage(None, None, fake_labels=fl, reference_labels=rl, num_classes=4)
    assert got == pytest.approx(want)


def test_nearest_neighbour_labels_matches_brute_force():
    rng = np.random.default_rng(1)
    ref, query = rng.normal(size=(50, 5)), rng.normal(size=(20, 5))
    labels = rng.integers(0, 7, size=50)
    got = nearest_neighbour_labels(ref, labels, query)
    want = labels[[np.argmin(np.linalg.norm(ref - x, axis=1)) for x in query]]
    assert got.dtype == np.int64 and got.shape == (20,)
    np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")
def inputs() -> MetricInputs:
    rng = np.random.default_rng(2)
    real = rng.normal(size=(60, 8)).astype(np.float32)
    return MetricInputs(
        real=real,
        fake=rng.normal(size=(50, 8)).astype(np.float32) + 0.2,
        train=real[:30],
        train_full=real,
        fake_labels=rng.integers(0, 3, size=50),
        reference_labels=rng.integers(0, 3, size=60),
        num_classes=3,
    )


@pytest.mark.parametrize("name", sorted(METRICS))
def test_registry_returns_documented_finite_floats(name, inputs):
    out = METRICS[name](inputs)
    assert set(out) == EXPECTED_KEYS[name]
    assert all(type(v) is float and math.isfinite(v) for v in out.values())


def test_registry_keys_are_exactly_the_documented_names():
    assert set(METRICS) == set(EXPECTED_KEYS)


@pytest.mark.parametrize("name,missing", [("memorization", "train"), ("cluster_coverage", "fake_labels")])
def test_registry_names_missing_inputs(name, missing, inputs):
    bare = MetricInputs(real=inputs.real, fake=inputs.fake)
    with pytest.raises(ValueError, match=missing):
        METRICS[name](bare)


def test_balanced_indices_keep_the_smallest_class_count():
    labels = np.array([0] * 50 + [1] * 7 + [2] * 12 + [-1] * 5)
    idx = balanced_indices(labels, np.random.default_rng(0))
    assert np.all(np.diff(idx) > 0)                                  # sorted, no repeats
    assert np.bincount(labels[idx], minlength=3).tolist() == [7, 7, 7]   # -1 never drawn
    again = balanced_indices(labels, np.random.default_rng(0))
    assert np.array_equal(idx, again)
    with pytest.raises(ValueError, match="label >= 0"):
        balanced_indices(np.full(4, -1), np.random.default_rng(0))


def test_balanced_reference_removes_the_majority_prior():
    # class 0 is ten times larger; queries sit on the midline between the two classes: a
    # skewed reference labels few of them 1, the balanced one a far larger share
    rng = np.random.default_rng(1)
    ref = np.concatenate([rng.normal(0, 1, (2000, 2)), rng.normal((3, 0), 1, (200, 2))])
    labels = np.array([0] * 2000 + [1] * 200)
    query = np.stack([np.full(1000, 1.5), rng.normal(0, 1, 1000)], 1)
    skewed = nearest_neighbour_labels(ref, labels, query).mean()
    bal = balanced_indices(labels, np.random.default_rng(1))
    balanced = nearest_neighbour_labels(ref[bal], labels[bal], query).mean()
    assert skewed < 0.25 and 0.3 < balanced < 0.7 and balanced > 2 * skewed


def test_predicted_labels_give_shares_and_agreement_by_hand():
    """cov_pred_share_<c> and cov_label_agreement of a second labeller, hand-computed."""
    from eval.coverage import compute_cluster_coverage, label_agreement

    nn = np.array([0, 0, 1, 1, 2, 0])
    pred = np.array([0, 1, 1, 1, 0, 0])                 # agrees on samples 0, 2, 3, 5
    out = compute_cluster_coverage(None, np.zeros((6, 2)), fake_labels=nn, num_classes=3,
                                   predicted_labels=pred)
    assert [out[f"cov_pred_share_{c}"] for c in range(3)] == [0.5, 0.5, 0.0]
    assert [out[f"cov_share_{c}"] for c in range(3)] == [0.5, 2 / 6, 1 / 6]
    assert out["cov_label_agreement"] == 4 / 6 == label_agreement(pred, nn)
    assert "cov_pred_share_0" not in compute_cluster_coverage(None, np.zeros((6, 2)),
                                                              fake_labels=nn, num_classes=3)
    with pytest.raises(ValueError, match="predicted_labels"):
        compute_cluster_coverage(None, np.zeros((6, 2)), fake_labels=nn, num_classes=3,
                                 predicted_labels=pred[:5])
