"""pruning.stats' draws: t on a stratified grid shared by every sample, noise per
(seed, id) or (``noise="shared"``) one noise per seed shared by every sample; the
statistics that use them: tests/test_pruning_stats.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import expected_shared_noise
from pruning import stats

SHAPE = (2, 4, 4)   # one sample's (C, H, W)


def test_shared_grid_t_is_identical_across_samples_and_stratified():
    k, seed = 4, 7
    t, _ = stats.fixed_draws(torch.tensor([3, 5, 1000, 0]), k, SHAPE, seed)
    assert t.shape == (4, k) and t.dtype == torch.float32
    assert torch.equal(t, t[:1].expand(4, k))          # one t row shared by every sample
    t_other, _ = stats.fixed_draws(torch.tensor([77]), k, SHAPE, seed)
    assert torch.equal(t_other[0], t[0])                # and by every id, in any batch
    row = t[0].double().numpy()
    # Stratified: exactly one t in each stratum [j/K, (j+1)/K), all at one offset u.
    np.testing.assert_array_equal(np.floor(row * k), np.arange(k))
    u = row * k - np.arange(k)
    np.testing.assert_allclose(u, u[0], atol=1e-5)
    assert 0.0 <= u[0] < 1.0
    np.testing.assert_allclose(u[0], stats.grid_offset(seed), atol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3, 8])
def test_shared_grid_in_unit_interval(k):
    for seed in range(20):
        t, _ = stats.fixed_draws(torch.tensor([1]), k, SHAPE, seed)
        assert float(t.min()) >= 0.0 and float(t.max()) < 1.0
        assert len(np.unique(np.floor(t[0].double().numpy() * k))) == k


def test_noise_is_per_sample_and_deterministic_per_seed_and_id():
    ids = torch.tensor([3, 5, 9])
    _, n1 = stats.fixed_draws(ids, 2, SHAPE, seed=7)
    _, n2 = stats.fixed_draws(ids, 2, SHAPE, seed=7)
    assert torch.equal(n1, n2)                          # deterministic
    assert n1.shape == (3, 2, *SHAPE)
    for a in range(3):                                  # differs across ids and draws
        assert not torch.equal(n1[a, 0], n1[a, 1])
        for b in range(a + 1, 3):
            assert not torch.allclose(n1[a], n1[b])
    # Roughly N(0, 1): mean and std of 3 x 2 x 32 values.
    assert abs(float(n1.mean())) < 0.3 and 0.8 < float(n1.std()) < 1.2


@pytest.mark.parametrize("t_mode", stats.T_MODES)
def test_draws_independent_of_batch_order_and_composition(t_mode):
    t1, n1 = stats.fixed_draws(torch.tensor([3, 5]), 3, SHAPE, 7, t_mode)
    t2, n2 = stats.fixed_draws(torch.tensor([5, 9, 3]), 3, SHAPE, 7, t_mode)
    t3, n3 = stats.fixed_draws(torch.tensor([3]), 3, SHAPE, 7, t_mode)
    assert torch.equal(t1[0], t2[2]) and torch.equal(n1[1], n2[0]) and torch.equal(n1[0], n2[2])
    assert torch.equal(t1[0], t3[0]) and torch.equal(n1[0], n3[0])


@pytest.mark.parametrize("t_mode", stats.T_MODES)
def test_two_seeds_give_disjoint_draws(t_mode):
    ids = torch.arange(50)
    ta, na = stats.fixed_draws(ids, 4, SHAPE, 0, t_mode)
    tb, nb = stats.fixed_draws(ids, 4, SHAPE, 1, t_mode)
    assert not np.intersect1d(ta.numpy(), tb.numpy()).size   # no t value in common
    # no (sample, draw) noise in common, not even one coordinate
    assert not np.intersect1d(na.numpy().ravel(), nb.numpy().ravel()).size
    assert stats.grid_offset(0) != stats.grid_offset(1)


def test_per_sample_mode_keeps_former_draws_with_the_same_noise():
    ids = torch.tensor([4, 11, 12])
    tp, npn = stats.fixed_draws(ids, 3, SHAPE, 2, "per_sample")
    tg, ng = stats.fixed_draws(ids, 3, SHAPE, 2)
    assert torch.equal(npn, ng)                          # the modes differ in t only
    assert not torch.equal(tp[0], tp[1])                 # per-sample t varies across ids
    # the former behaviour: t then noise from one numpy stream per (seed, id)
    gen = np.random.default_rng([2, 11])
    np.testing.assert_array_equal(tp[1].numpy(), gen.random(3, dtype=np.float32))
    np.testing.assert_array_equal(npn[1].numpy(), gen.standard_normal((3, *SHAPE), dtype=np.float32))


@pytest.mark.parametrize("t_mode", stats.T_MODES)
def test_shared_noise_is_identical_across_ids_and_batches(t_mode):
    k, seed = 3, 4
    t, n = stats.fixed_draws(torch.tensor([3, 5, 1000, 0]), k, SHAPE, seed, t_mode, "shared")
    assert n.shape == (4, k, *SHAPE) and n.dtype == torch.float32
    for row in range(4):                                # every id gets the seed's K noises
        np.testing.assert_array_equal(n[row].numpy(), expected_shared_noise(k, seed, SHAPE))
    _, n_other = stats.fixed_draws(torch.tensor([77]), k, SHAPE, seed, t_mode, "shared")
    assert torch.equal(n_other[0], n[0])                # in any batch
    assert not torch.equal(n[0, 0], n[0, 1])            # the K draws differ
    t_ps, _ = stats.fixed_draws(torch.tensor([3, 5, 1000, 0]), k, SHAPE, seed, t_mode)
    assert torch.equal(t, t_ps)                         # noise sharing leaves t alone
    assert abs(float(n.mean())) < 0.3 and 0.8 < float(n[0].std()) < 1.2


@pytest.mark.parametrize("t_mode", stats.T_MODES)
def test_shared_noise_differs_across_seeds(t_mode):
    ids = torch.arange(20)
    na = stats.fixed_draws(ids, 4, SHAPE, 0, t_mode, "shared")[1]
    nb = stats.fixed_draws(ids, 4, SHAPE, 1, t_mode, "shared")[1]
    assert not np.intersect1d(na.numpy().ravel(), nb.numpy().ravel()).size
    # and differs from every per-sample stream of the same seed
    npn = stats.fixed_draws(ids, 4, SHAPE, 0, t_mode)[1]
    assert not np.intersect1d(na[0].numpy().ravel(), npn.numpy().ravel()).size


def test_per_sample_noise_is_the_default_and_unchanged():
    ids = torch.tensor([4, 11])
    t0, n0 = stats.fixed_draws(ids, 3, SHAPE, 2)
    t1, n1 = stats.fixed_draws(ids, 3, SHAPE, 2, noise="per_sample")
    assert torch.equal(t0, t1) and torch.equal(n0, n1)
    gen = np.random.default_rng([2, 11])                # K t values, then the noise
    gen.random(3, dtype=np.float32)
    np.testing.assert_array_equal(n0[1].numpy(), gen.standard_normal((3, *SHAPE), dtype=np.float32))


def test_fixed_draws_rejects_bad_arguments():
    with pytest.raises(ValueError, match="t_mode"):
        stats.fixed_draws(torch.tensor([1]), 2, SHAPE, 0, "uniform")
    with pytest.raises(ValueError, match="noise must be one of"):
        stats.fixed_draws(torch.tensor([1]), 2, SHAPE, 0, noise="common")
    with pytest.raises(ValueError, match="k >= 1"):
        stats.fixed_draws(torch.tensor([1]), 0, SHAPE, 0)
    with pytest.raises(ValueError, match="ids must be >= 0"):
        stats.fixed_draws(torch.tensor([-1]), 1, SHAPE, 0)
