"""PRDC against a float64 brute force, identity, and the real/fake direction."""

import numpy as np
import pytest

import eval.knn
from eval.prdc import compute_prdc


def brute_force_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Loop-level float64 reference: closed balls (<=), k-th neighbour excluding self."""

    def radii(x):
        out = np.empty(len(x))
        for i in range(len(x)):
            d = sorted(np.linalg.norm(x[j] - x[i]) for j in range(len(x)) if j != i)
            out[i] = d[k - 1]
        return out

    rr, rf = radii(real), radii(fake)
    dist = np.array([[np.linalg.norm(r - f) for f in fake] for r in real])  # (N, M)
    n, m = dist.shape
    precision = np.mean([any(dist[i, j] <= rr[i] for i in range(n)) for j in range(m)])
    recall = np.mean([any(dist[i, j] <= rf[j] for j in range(m)) for i in range(n)])
    density = sum(dist[i, j] <= rr[i] for i in range(n) for j in range(m)) / (k * m)
    coverage = np.mean([dist[i].min() <= rr[i] for i in range(n)])
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


@pytest.mark.parametrize("seed,n,m", [(0, 60, 45), (1, 40, 70)])
def test_matches_brute_force(seed, n, m):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(n, 5))
    fake = rng.normal(size=(m, 5)) * 1.2 + 0.3
    got = compute_prdc(real, fake, k=3)
    want = brute_force_prdc(real, fake, 3)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    p, r = want["precision"], want["recall"]
    assert got["f_score"] == pytest.approx(2 * p * r / (p + r), abs=1e-12)
    # The random sets overlap partially: the assertions above must not be vacuous.
    assert 0 < p < 1 and 0 < r < 1


def test_chunking_does_not_change_the_result(monkeypatch):
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(50, 4)), rng.normal(size=(37, 4))
    whole = compute_prdc(real, fake)
    monkeypatch.setattr(eval.knn, "BLOCK_BYTES", 8 * 37 * 3)  # 3-row blocks
    assert compute_prdc(real, fake) == whole


def test_identical_sets_give_full_precision_and_recall():
    x = np.random.default_rng(2).normal(size=(80, 8))
    got = compute_prdc(x, x.copy())
    assert got["precision"] == 1.0 and got["recall"] == 1.0 and got["coverage"] == 1.0
    assert got["f_score"] == 1.0


def test_direction_fake_copies_of_one_real_point():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(50, 6))
    fake = np.repeat(real[:1], 20, axis=0)  # mode collapse onto one real sample
    got = compute_prdc(real, fake)
    # Every fake sits on the real manifold; only that one real point is recalled.
    assert got["precision"] == 1.0
    assert got["recall"] == pytest.approx(1 / 50)
    swapped = compute_prdc(fake, real)
    assert swapped["precision"] == pytest.approx(1 / 50)


def test_disjoint_sets_score_zero():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(30, 3))
    fake = rng.normal(size=(30, 3)) + 100.0
    got = compute_prdc(real, fake)
    assert got == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0, "f_score": 0.0}


def test_dimension_mismatch_raises():
    with pytest.raises(ValueError, match="dims differ"):
        compute_prdc(np.zeros((10, 3)), np.zeros((10, 4)))


def test_metric_adapter_passes_prdc_k():
    from eval import METRICS, MetricInputs

    rng = np.random.default_rng(6)
    real, fake = rng.normal(size=(60, 5)), rng.normal(size=(45, 5)) * 1.2 + 0.3
    default = METRICS["prdc"](MetricInputs(real=real, fake=fake))
    assert MetricInputs(real=real, fake=fake).prdc_k == 3
    assert default == compute_prdc(real, fake, k=3)
    for k in (1, 5):
        got = METRICS["prdc"](MetricInputs(real=real, fake=fake, prdc_k=k))
        want = brute_force_prdc(real, fake, k)
        for key, value in want.items():
            assert got[key] == pytest.approx(value, abs=1e-12), (k, key)
        assert got != default, k  # the configured k reaches PRDC
