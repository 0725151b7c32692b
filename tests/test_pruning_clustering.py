"""k-means and clustering quotas against scikit-learn and brute force."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans

from pruning import PRUNERS, ScoreContext
from pruning.clustering import balanced_quotas, distance_scores, kmeans, proportional_quotas
from pruning.kmeans import kmeanspp_seed


def _blobs(n, d, k, seed, spread=1.0, scale=4.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * scale
    labels = rng.integers(0, k, size=n)
    return (centres[labels] + spread * rng.normal(size=(n, d))).astype(np.float32), labels


@pytest.mark.parametrize("seed,n,k", [(0, 4000, 20), (1, 4000, 20), (2, 12000, 8)])
def test_kmeans_inertia_within_one_percent_of_sklearn(seed, n, k):
    # n=12000, k=8 exercises the Lloyd subsample (256 * k < n)
    x, _ = _blobs(n, 32, k, seed)
    centroids, assign, dist = kmeans(x, k, seed=seed, niter=25)
    # outputs are consistent: dist is the squared distance to the assigned centroid
    brute = ((x[:, None, :] - centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(assign, brute.argmin(1))
    np.testing.assert_allclose(dist, brute.min(1), rtol=1e-3, atol=1e-3)
    ref = KMeans(k, init="k-means++", n_init=1, max_iter=25, random_state=seed).fit(x)
    assert dist.sum() <= 1.01 * ref.inertia_


def test_kmeans_is_deterministic_and_validates_k():
    x, _ = _blobs(500, 8, 5, 0)
    a, b = kmeans(x, 5, seed=3), kmeans(x, 5, seed=3)
    np.testing.assert_array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="k"):
        kmeans(x, 0)
    with pytest.raises(ValueError, match="k"):
        kmeans(x, 501)


def test_kmeanspp_seeds_one_centre_per_separated_blob():
    x, labels = _blobs(600, 8, 6, 1, spread=0.05, scale=10.0)
    centres = kmeanspp_seed(x, 6, np.random.default_rng(0))
    owner = [labels[np.argmin(((x - c) ** 2).sum(1))] for c in centres]
    assert sorted(owner) == list(range(6))


def test_proportional_quotas_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(200):
        sizes = rng.integers(0, 50, size=rng.integers(1, 9))
        if sizes.sum() == 0:
            continue
        m = int(rng.integers(0, sizes.sum() + 1))
        q = proportional_quotas(sizes, m, rng)
        exact = sizes * m / sizes.sum()
        assert q.sum() == m and (q <= sizes).all()
        assert (np.abs(q - exact) < 1 + 1e-9).all()  # each within one of its share
        assert (q >= np.floor(exact + 1e-9)).all()   # never below its floor


def test_balanced_quotas_equalize_and_reallocate_shortfall():
    np.testing.assert_array_equal(balanced_quotas(np.array([100, 10, 50, 5]), 60), [23, 10, 22, 5])
    np.testing.assert_array_equal(balanced_quotas(np.array([30, 30, 30]), 30), [10, 10, 10])
    rng = np.random.default_rng(1)
    for _ in range(200):
        sizes = rng.integers(0, 40, size=rng.integers(1, 8))
        m = int(rng.integers(0, sizes.sum() + 1))
        q = balanced_quotas(sizes, m)
        assert q.sum() == m and (q <= sizes).all()
        full = q == sizes
        # all non-full clusters within one of each other, and >= any full one - 1
        if (~full).any():
            assert q[~full].max() - q[~full].min() <= 1
            assert q[~full].min() >= q.max() - 1


def test_distance_scores_mid_drops_both_ends():
    dist = np.array([0.1, 0.5, 0.9, 0.3, 0.7, 2.0, 1.0])
    groups = np.array([0, 0, 0, 0, 0, 1, 1])
    s = distance_scores(dist, groups, "mid")
    order = np.argsort(-s[:5], kind="stable")
    assert order[0] == 1  # the median-distance member ranks first
    assert set(order[3:]) == {0, 2}  # nearest and farthest rank last
    np.testing.assert_array_equal(distance_scores(dist, groups, "nearest"), -dist)


def _ctx(feats):
    return ScoreContext(n=len(feats), seed=0, labels=None,
                        embeddings={"clip": feats}, stats={})


def test_proportional_mode_keeps_each_clusters_share_nearest_first():
    x, _ = _blobs(300, 16, 3, 2, spread=0.3, scale=6.0)
    pruner = PRUNERS["clustering"](embedder="clip", k=3, keep="nearest", mode="proportional")
    res = pruner.score(_ctx(x))
    keep = pruner.select(res, 0.75, np.random.default_rng(0))
    assert len(keep) == 75
    sizes = np.bincount(res.groups, minlength=3)
    kept = np.bincount(res.groups[keep], minlength=3)
    assert (np.abs(kept - sizes * 0.25) < 1).all() and kept.sum() == 75
    # within a cluster, every kept sample is nearer the centroid than every dropped one
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    for c in range(3):
        members = np.flatnonzero(res.groups == c)
        centre = xn[members].mean(0)
        d = ((xn[members] - centre) ** 2).sum(1)
        inside = np.isin(members, keep)
        assert d[inside].max() <= d[~inside].min() + 1e-5


def test_balanced_mode_equalizes_a_skewed_set():
    # skewed: 400 / 100 / 20 samples in three separated blobs
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(3, 16)) * 8
    counts = [400, 100, 20]
    x = np.vstack([c + 0.3 * rng.normal(size=(m, 16)) for c, m in zip(centres, counts)]).astype(np.float32)
    pruner = PRUNERS["clustering"](embedder="clip", k=3, keep="farthest", mode="balanced")
    res = pruner.score(_ctx(x))
    keep = pruner.select(res, 0.75, np.random.default_rng(0))  # keep 130
    kept = sorted(np.bincount(res.groups[keep], minlength=3).tolist())
    assert kept == [20, 55, 55]  # small cluster kept whole, shortfall split evenly
    prop = PRUNERS["clustering"](embedder="clip", k=3, keep="farthest", mode="proportional")
    kept_p = sorted(np.bincount(res.groups[prop.select(res, 0.75, np.random.default_rng(0))]).tolist())
    assert kept_p == [5, 25, 100]


# Subsets the three k-means pruners selected before their shared set-up moved into
# pruning.base.KMeansPruner (issue 25): the refactor must select the same samples.
# niter=0 (k-means++ centres, then the nearest-centroid assignment) gives the same
# indices on every k-means backend (faiss or numpy).
KMEANS_SUBSETS = [
    ("clustering", {}, [0, 2, 7, 11, 12, 16, 17, 19, 20, 21, 22, 25, 26, 29, 30, 31, 32,
                        37, 38, 39]),
    ("clustering", {"keep": "mid", "mode": "balanced"},
     [0, 1, 3, 4, 5, 7, 11, 12, 13, 14, 16, 17, 18, 22, 23, 26, 29, 34, 36, 39]),
    ("prototypes", {}, [0, 1, 4, 5, 11, 12, 13, 16, 17, 19, 20, 21, 25, 29, 31, 32, 33, 36,
                        37, 39]),
    ("semdedup", {}, [0, 2, 4, 5, 8, 9, 12, 13, 17, 19, 20, 21, 25, 28, 29, 30, 32, 33, 37,
                      38]),
]


@pytest.mark.parametrize("name,params,want", KMEANS_SUBSETS)
def test_kmeans_pruners_select_the_same_subsets_as_before(name, params, want):
    rng = np.random.default_rng(7)
    centers = rng.normal(size=(4, 8)) * 3
    x = (centers[np.arange(40) % 4] + rng.normal(size=(40, 8))).astype(np.float32)
    x[5] = x[1] * 1.001                                  # a near duplicate for semdedup
    ctx = ScoreContext(n=40, seed=3, embeddings={"pixels": x})
    pruner = PRUNERS[name](embedder="pixels", k=4, niter=0, **params)
    keep = pruner.select(pruner.score(ctx), 0.5, np.random.default_rng(11))
    assert keep.tolist() == want
