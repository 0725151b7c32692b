"""Memorization: how close generated samples sit to the training data.

Distance: Euclidean between L2-normalized features (so values lie in [0, 2] and are
comparable across embedders whose raw feature scales differ). Every quantity here
uses that one distance. Neighbours are found by faiss (exact search, float32) and
their distances recomputed in float64.

* ``mem_nn_mean`` / ``mem_nn_median``: nearest-neighbour distance of each generated
  sample to the FULL training set (all training images before pruning), as Briq et al.
  define memorization. It does not drift with the pruning ratio by construction.
* ``mem_subset_nn_mean`` / ``mem_subset_nn_median``: the same to the training SUBSET
  the model was trained on (a sparser subset is farther away whatever the model does).
* ``mem_subset_copy_rate``: share of generated samples strictly closer to their nearest
  subset sample t than t is to its own nearest other subset sample. A generated image
  inside that gap is nearer to t than anything else the model saw: a copy.
* ``mem_centroid_nn_mean`` (only when ``centroids`` are given): mean distance to the
  nearest centroid, e.g. of the clusters a clustering method selected by, for the
  question whether clustering-pruned models collapse onto cluster centres. The
  centroids must live in the same feature space as ``fake``.
"""

from __future__ import annotations

import numpy as np

from eval.knn import as_features, knn_indices, kth_neighbour_radius

# Rows normalized per block when building the float32 search copy of a large set.
_NORM_BLOCK = 8192


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


def _normalized_float32(x: np.ndarray, name: str) -> np.ndarray:
    """(N, D) -> (N, D) float32 unit rows, normalized in float64 block by block.

    The full training set can be the largest array of an evaluation (60k x 2048): this
    never holds a float64 copy of it, only the float32 search copy faiss needs anyway.
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) array, got shape {x.shape}")
    out = np.empty(x.shape, dtype=np.float32)
    for s in range(0, x.shape[0], _NORM_BLOCK):
        out[s:s + _NORM_BLOCK] = l2_normalize(x[s:s + _NORM_BLOCK], name)
    return out


def _nearest_normalized(base: np.ndarray, query_n: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Nearest base row of each query row, distance between L2-normalized vectors.

    Args:
        base: (N, D) raw features searched (any float dtype; normalized here).
        query_n: (M, D) float64 L2-normalized query features.
        name: argument name of ``base`` for errors.

    Returns:
        (dist (M,) float64, idx (M,) int64): float64 distance to and index of the
        nearest base row.
    """
    base_32 = _normalized_float32(base, name)
    if base_32.shape[1] != query_n.shape[1]:
        raise ValueError(f"feature dims differ: fake {query_n.shape[1]} vs {name} {base_32.shape[1]}")
    idx = knn_indices(base_32, query_n, 1)[:, 0]
    del base_32
    nearest = l2_normalize(np.asarray(base)[idx], name)  # exact float64 recomputation
    return np.linalg.norm(query_n - nearest, axis=1), idx


def compute_memorization(real: np.ndarray | None, fake: np.ndarray, train: np.ndarray,
                         train_full: np.ndarray,
                         centroids: np.ndarray | None = None) -> dict[str, float]:
    """Nearest-neighbour distances from generated samples to the training data.

    Args:
        real: (N, D) reference features; unused, kept for the common signature.
        fake: (M, D) generated-sample features.
        train: (T, D) features of the subset the model was trained on, T >= 2.
        train_full: (T_full, D) features of the full training set (before pruning).
        centroids: (K, D) cluster centres in the same space, or None.

    Returns:
        {"mem_nn_mean", "mem_nn_median"} (to the full training set),
        {"mem_subset_nn_mean", "mem_subset_nn_median", "mem_subset_copy_rate"} (to the
        subset) and, when ``centroids`` is given, "mem_centroid_nn_mean".
    """
    del real
    fake_n = l2_normalize(fake, "fake")
    full_dist, _ = _nearest_normalized(train_full, fake_n, "train_full")
    train_n = l2_normalize(train, "train")
    if fake_n.shape[1] != train_n.shape[1]:
        raise ValueError(f"feature dims differ: fake {fake_n.shape[1]} vs train {train_n.shape[1]}")
    nearest = knn_indices(train_n, fake_n, 1)[:, 0]  # (M,) index of nearest subset sample
    sub_dist = np.linalg.norm(fake_n - train_n[nearest], axis=1)  # (M,) float64
    gap = kth_neighbour_radius(train_n, 1)  # (T,) each subset sample's own 1-NN distance
    out = {
        "mem_nn_mean": float(full_dist.mean()),
        "mem_nn_median": float(np.median(full_dist)),
        "mem_subset_nn_mean": float(sub_dist.mean()),
        "mem_subset_nn_median": float(np.median(sub_dist)),
        "mem_subset_copy_rate": float((sub_dist < gap[nearest]).mean()),
    }
    if centroids is not None:
        cent_dist, _ = _nearest_normalized(centroids, fake_n, "centroids")
        out["mem_centroid_nn_mean"] = float(cent_dist.mean())
    return out
