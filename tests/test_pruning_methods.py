"""Training-dynamics methods and ccs/semdedup/prototypes on hand-built inputs."""

from __future__ import annotations

import numpy as np
import pytest

from pruning import PRUNERS, ScoreContext
from pruning.ccs import stratum_budgets
from pruning.monotonicity import increase_fraction
from pruning.semdedup import max_earlier_similarity


def _ctx(n, **stats):
    return ScoreContext(n=n, seed=0, labels=None, embeddings={}, stats=stats)


def test_monotonicity_on_hand_written_trajectory():
    traj = np.array([
        [5.0, 4.0, 3.0, 2.0, 1.0],   # monotone decrease: 0 ups
        [1.0, 2.0, 3.0, 4.0, 5.0],   # monotone increase: 4 ups
        [3.0, 4.0, 2.0, 3.0, 1.0],   # up, down, up, down: 2 ups
        [2.0, 2.0, 2.0, 3.0, 3.0],   # flat steps do not count: 1 up
    ])
    np.testing.assert_allclose(increase_fraction(traj), [0, 1, 0.5, 0.25])
    res = PRUNERS["monotonicity"]().score(_ctx(4, loss_traj=traj))
    np.testing.assert_allclose(res.scores, [0, 1, 0.5, 0.25])
    keep = PRUNERS["monotonicity"]().select(res, 0.5, np.random.default_rng(0))
    assert keep.tolist() == [1, 2]  # default keeps the least monotone
    low = PRUNERS["monotonicity"](keep="low")
    assert low.select(low.score(_ctx(4, loss_traj=traj)), 0.5, np.random.default_rng(0)).tolist() == [0, 3]


def test_monotonicity_brute_force_random():
    rng = np.random.default_rng(0)
    traj = rng.random((30, 7))
    ref = [sum(traj[i, s + 1] > traj[i, s] for s in range(6)) / 6 for i in range(30)]
    np.testing.assert_allclose(increase_fraction(traj), ref)


@pytest.mark.parametrize("checkpoint", [0, 2, -1])
def test_el2n_reads_the_checkpoint_column(checkpoint):
    traj = np.arange(12, dtype=float).reshape(4, 3) * np.array([[1], [-1], [2], [0.5]])
    res = PRUNERS["el2n"](checkpoint=checkpoint).score(_ctx(4, loss_traj=traj))
    np.testing.assert_array_equal(res.scores, traj[:, checkpoint])


def test_el2n_defaults_to_the_last_step_at_its_own_draws():
    """Default: stats["loss_last"] (the proxy's el2n_draws draws), not the trajectory."""
    pruner = PRUNERS["el2n"]()
    assert pruner.needs_stats == ("loss_last",)
    assert PRUNERS["el2n"](checkpoint=-1).needs_stats == ("loss_traj",)
    last = np.array([[3.0], [1.0], [2.0]])
    res = pruner.score(_ctx(3, loss_traj=np.zeros((3, 2)), loss_last=last))
    np.testing.assert_array_equal(res.scores, last[:, 0])
    with pytest.raises(ValueError, match="checkpoint"):
        PRUNERS["el2n"](checkpoint="first")


def test_el2n_checkpoint_out_of_range():
    with pytest.raises(ValueError, match="checkpoint"):
        PRUNERS["el2n"](checkpoint=5).score(_ctx(2, loss_traj=np.zeros((2, 3))))


def test_grand_and_moso_read_their_stats():
    g = np.array([[1.0, 3.0], [2.0, 1.0], [0.5, 0.2]])
    np.testing.assert_array_equal(PRUNERS["grand"]().score(_ctx(3, grad_norm=g)).scores, g[:, -1])
    np.testing.assert_array_equal(PRUNERS["grand"](checkpoint=0).score(_ctx(3, grad_norm=g)).scores, g[:, 0])
    np.testing.assert_allclose(PRUNERS["moso"]().score(_ctx(3, moso=g)).scores, g.mean(axis=1))


def test_max_earlier_similarity_brute_force():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(37, 5))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    order = rng.permutation(37)
    got = max_earlier_similarity(x, order, block=8)
    for pos, i in enumerate(order):
        ref = -1.0 if pos == 0 else max(float(x[i] @ x[j]) for j in order[:pos])
        assert got[i] == pytest.approx(ref, abs=1e-5)


def test_semdedup_removes_planted_duplicates_keeping_one_each():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(60, 16))
    # 10 originals get 1..3 near-copies each (tiny noise); 20 duplicates in all.
    copies, owner = [], []
    for i, c in enumerate([1, 2, 3, 1, 2, 3, 2, 2, 2, 2]):
        for _ in range(c):
            copies.append(base[i] + 1e-3 * rng.normal(size=16))
            owner.append(i)
    feats = np.vstack([base, copies]).astype(np.float32)
    n = len(feats)
    ctx = ScoreContext(n=n, seed=0, labels=None, embeddings={"effnet_lite0": feats}, stats={})
    pruner = PRUNERS["semdedup"](k=5, eps=0.01)
    res = pruner.score(ctx)
    assert res.meta["duplicates"] == 20
    keep = pruner.select(res, 20 / n, np.random.default_rng(0))
    assert len(keep) == 60
    groups = [[i] + [60 + j for j, o in enumerate(owner) if o == i] for i in range(60)]
    for members in groups:  # exactly one of each duplicate group survives
        assert len(set(members) & set(keep.tolist())) == 1


def test_stratum_budgets_follow_ccs_allocation():
    # smallest strata first: 2 -> min(2, 30//4=7)=2, 5 -> min(5, 28//3=9)=5,
    # 40 -> 23//2=11, 100 -> 12: sum 30
    np.testing.assert_array_equal(stratum_budgets(np.array([40, 2, 100, 5]), 30), [11, 2, 12, 5])
    rng = np.random.default_rng(0)
    for _ in range(50):
        sizes = rng.integers(0, 30, size=rng.integers(1, 8))
        m = int(rng.integers(0, sizes.sum() + 1))
        b = stratum_budgets(sizes, m)
        assert b.sum() == m and (b <= sizes).all() and (b >= 0).all()
        # fairness: a stratum below its size never gets fewer than another's budget - 1
        open_ = b < sizes
        if open_.any():
            assert b[open_].min() >= b.max() - 1 or b[open_].min() >= b[~open_].max(initial=0)


def test_ccs_cuts_hardest_and_fills_strata():
    n = 200
    loss = np.linspace(0.0, 1.0, n)  # el2n difficulty = loss at the last column
    ctx = _ctx(n, loss_traj=np.stack([loss, loss], axis=1), loss_last=loss[:, None])
    pruner = PRUNERS["ccs"](base="el2n", beta=0.1, strata=4)
    res = pruner.score(ctx)
    assert (res.groups[-20:] == -1).all() and (res.groups[:-20] >= 0).all()
    keep = pruner.select(res, 0.8, np.random.default_rng(0))
    assert len(keep) == 40 and keep.max() < 180  # hardest 10% never kept
    counts = np.bincount(res.groups[keep], minlength=4)
    np.testing.assert_array_equal(counts, [10, 10, 10, 10])  # uniform strata -> equal budgets
    # budget beyond the cut admits the least hard cut samples first
    keep95 = pruner.select(res, 0.05, np.random.default_rng(0))
    assert len(keep95) == 190 and set(range(190)) == set(keep95.tolist())


def test_ccs_uses_base_stats_and_params():
    pruner = PRUNERS["ccs"](base="grand", base_params={"checkpoint": 0})
    assert pruner.needs_stats == ("grad_norm",)
    assert PRUNERS["ccs"](base="clustering").embedder == "effnet_lite0"


def test_prototypes_scores_cosine_distance_to_prototype():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, 8)) * 5
    feats = np.vstack([c + rng.normal(size=(30, 8)) for c in centres]).astype(np.float32)
    ctx = ScoreContext(n=90, seed=0, labels=None, embeddings={"effnet_lite0": feats}, stats={})
    res = PRUNERS["prototypes"](k=3).score(ctx)
    x = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    # independent reference: each blob's normalized mean direction as prototype
    ref = np.empty(90)
    for b in range(3):
        rows = slice(30 * b, 30 * b + 30)
        p = x[rows].mean(axis=0)
        ref[rows] = 1 - x[rows] @ (p / np.linalg.norm(p))
    np.testing.assert_allclose(res.scores, ref, atol=1e-4)
    near = PRUNERS["prototypes"](k=3, keep="nearest").score(ctx).scores
    np.testing.assert_allclose(near, -res.scores)
