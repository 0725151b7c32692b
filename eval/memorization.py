"""Memorization: how close generated samples sit to the training subset.

Distance: Euclidean between L2-normalized features (so values lie in [0, 2] and are
comparable across embedders whose raw feature scales differ). Every quantity here
uses that one distance.

* ``mem_nn_mean`` / ``mem_nn_median``: nearest-training-neighbour distance of each
  generated sample (faiss exact search, recomputed in float64).
* ``mem_copy_rate``: share of generated samples strictly closer to their nearest
  training sample t than t is to its own nearest other training sample. A generated
  image inside that gap is nearer to t than anything else the model saw: a copy.
"""

from __future__ import annotations

import numpy as np

from eval.knn import as_features, knn_indices, kth_neighbour_radius


def l2_normalize(x: np.ndarray, name: str) -> np.ndarray:
    """Rows scaled to unit L2 norm.

    Args:
        x: (N, D) features, no all-zero rows.
        name: argument name for errors.

    Returns:
        (N, D) float64.
    """
    x = as_features(x, name)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{name} contains all-zero rows; they have no direction")
    return x / norms


def compute_memorization(real: np.ndarray | None, fake: np.ndarray, train: np.ndarray) -> dict[str, float]:
    """Nearest-neighbour distances from generated samples to the training subset.

    Args:
        real: (N, D) reference features; unused, kept for the common signature.
        fake: (M, D) generated-sample features.
        train: (T, D) features of the subset the model was trained on, T >= 2.

    Returns:
        {"mem_nn_mean", "mem_nn_median", "mem_copy_rate"}.
    """
    del real
    fake_n = l2_normalize(fake, "fake")
    train_n = l2_normalize(train, "train")
    if fake_n.shape[1] != train_n.shape[1]:
        raise ValueError(f"feature dims differ: fake {fake_n.shape[1]} vs train {train_n.shape[1]}")
    nearest = knn_indices(train_n, fake_n, 1)[:, 0]  # (M,) index of nearest training sample
    nn_dist = np.linalg.norm(fake_n - train_n[nearest], axis=1)  # (M,) float64
    gap = kth_neighbour_radius(train_n, 1)  # (T,) each training sample's own 1-NN distance
    return {
        "mem_nn_mean": float(nn_dist.mean()),
        "mem_nn_median": float(np.median(nn_dist)),
        "mem_copy_rate": float((nn_dist < gap[nearest]).mean()),
    }

