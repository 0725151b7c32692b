"""Precision / recall (Kynkaanniemi et al. 2019) and density / coverage (Naeem et al. 2020).

Direction: ``real`` is the reference set and ``fake`` the generated set. Precision asks
how many generated samples fall inside the real manifold; recall how many real samples
fall inside the generated manifold. (Briq et al.'s released code passed the two sets the
other way round; the test ``test_direction_*`` pins ours.)

Manifolds are unions of closed balls ``B(x, r_k(x))`` with ``r_k`` the Euclidean
distance from x to its k-th nearest other point of its own set (faiss exact search,
distances recomputed in float64). Membership uses ``<=`` everywhere, so a point lying
exactly on its own set is inside a zero-radius ball (a set of identical samples still
covers itself).

The real x fake distance matrix is never held whole: it is streamed in row blocks
(``eval.knn.sq_distance_blocks``) and reduced on the fly.
"""

from __future__ import annotations

import numpy as np

from eval.knn import as_features, kth_neighbour_radius, sq_distance_blocks


def compute_prdc(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
    """Precision, recall, density, coverage and the P/R F-score.

    Args:
        real: (N, D) reference features, N > k.
        fake: (M, D) generated-sample features, M > k.
        k: neighbour rank for the ball radii (3, as in both papers' defaults).

    Returns:
        {"precision", "recall", "density", "coverage", "f_score"} with
        f_score = 2PR / (P + R) (0 when P + R = 0).
    """
    real = as_features(real, "real")
    fake = as_features(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dims differ: real {real.shape[1]} vs fake {fake.shape[1]}")
    r_real = kth_neighbour_radius(real, k) ** 2  # (N,) squared: compared with squared distances
    r_fake = kth_neighbour_radius(fake, k) ** 2  # (M,)

    n, m = real.shape[0], fake.shape[0]
    fake_in_real = np.zeros(m, dtype=np.int64)  # per fake: how many real balls contain it
    real_in_fake = np.zeros(n, dtype=bool)  # per real: inside some fake ball (recall)
    real_covered = np.zeros(n, dtype=bool)  # per real: some fake inside its own ball
    for rows, d2 in sq_distance_blocks(real, fake):  # d2: (b, M)
        inside_real = d2 <= r_real[rows, None]
        fake_in_real += inside_real.sum(axis=0)
        real_covered[rows] = inside_real.any(axis=1)
        real_in_fake[rows] = (d2 <= r_fake[None, :]).any(axis=1)

    precision = float((fake_in_real > 0).mean())
    recall = float(real_in_fake.mean())
    density = float(fake_in_real.sum() / (k * m))
    coverage = float(real_covered.mean())
    f_score = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {
        "precision": precision,
        "recall": recall,
        "density": density,
        "coverage": coverage,
        "f_score": float(f_score),
    }
