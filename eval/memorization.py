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
* ``mem_copy_rate``: share of generated samples nearer to their nearest FULL training
  image than the ``copy_quantile`` (default 0.05) quantile of the training-to-training
  nearest-neighbour distances (:func:`train_nn_distances`: each training image to its
  nearest *other* one, leave-one-out, same space and distance). A sample that close to
  a training image sits nearer to it than 95% of the training images sit to any other:
  a copy, at a stated, dataset-calibrated threshold (unlike ``mem_nn_mean``, which a
  model also lowers by generating into dense regions).
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
# mem_copy_rate's default threshold: this quantile of the training-to-training NN distances
COPY_QUANTILE = 0.05


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


def train_nn_distances(train_full: np.ndarray) -> np.ndarray:
    """Each training image's distance to its nearest OTHER training image (leave-one-out).

    The same distance as every memorization quantity (Euclidean between L2-normalized
    features); exact search (faiss flat index, float32), distances recomputed in float64.
    Quadratic in T (0.9 s for 3000 x 1280 on 2 cores, 6 s for 12000): the sweep computes
    it once per dataset and space (``orchestrator.stages.sweep.ensure_train_nn``).

    Args:
        train_full: (T, D) features of the full training set, T >= 2.

    Returns:
        (T,) float64 distances (0 for an image with an exact duplicate).
    """
    base_32 = _normalized_float32(train_full, "train_full")
    n = base_32.shape[0]
    if n < 2:
        raise ValueError(f"train_full needs at least 2 rows for a leave-one-out distance, got {n}")
    idx = knn_indices(base_32, base_32, 2)  # (T, 2); self first, unless tied with a duplicate
    del base_32
    rows = np.arange(n)
    other = np.where(idx[:, 0] == rows, idx[:, 1], idx[:, 0])
    raw = np.asarray(train_full)
    out = np.empty(n, dtype=np.float64)
    for s in range(0, n, _NORM_BLOCK):
        a = l2_normalize(raw[s:s + _NORM_BLOCK], "train_full")
        b = l2_normalize(raw[other[s:s + _NORM_BLOCK]], "train_full")
        out[s:s + _NORM_BLOCK] = np.linalg.norm(a - b, axis=1)
    return out


def copy_threshold(train_nn: np.ndarray, quantile: float = COPY_QUANTILE) -> float:
    """The copy threshold: the ``quantile`` of the training-to-training NN distances.

    Args:
        train_nn: (T,) :func:`train_nn_distances` of the full training set.
        quantile: in (0, 1) (numpy's default linear interpolation).

    Returns:
        The distance below which a generated sample counts as a copy.
    """
    t = np.asarray(train_nn, dtype=np.float64).ravel()
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"copy quantile must be in (0, 1), got {quantile}")
    if t.size == 0 or not np.isfinite(t).all():
        raise ValueError(f"train_nn must be non-empty and finite, got {t.size} values")
    return float(np.quantile(t, quantile))


def compute_memorization(real: np.ndarray | None, fake: np.ndarray, train: np.ndarray,
                         train_full: np.ndarray,
                         centroids: np.ndarray | None = None,
                         train_nn: np.ndarray | None = None,
                         copy_quantile: float = COPY_QUANTILE) -> dict[str, float]:
    """Nearest-neighbour distances from generated samples to the training data.

    Args:
        real: (N, D) reference features; unused, kept for the common signature.
        fake: (M, D) generated-sample features.
        train: (T, D) features of the subset the model was trained on, T >= 2.
        train_full: (T_full, D) features of the full training set (before pruning).
        centroids: (K, D) cluster centres in the same space, or None.
        train_nn: (T_full,) :func:`train_nn_distances` of ``train_full`` (precomputed
            once per dataset), or None to compute them here.
        copy_quantile: the quantile of ``train_nn`` that is the copy threshold.

    Returns:
        {"mem_nn_mean", "mem_nn_median", "mem_copy_rate"} (to the full training set),
        {"mem_subset_nn_mean", "mem_subset_nn_median", "mem_subset_copy_rate"} (to the
        subset) and, when ``centroids`` is given, "mem_centroid_nn_mean".
    """
    del real
    fake_n = l2_normalize(fake, "fake")
    full_dist, _ = _nearest_normalized(train_full, fake_n, "train_full")
    if train_nn is None:
        train_nn = train_nn_distances(train_full)
    elif np.shape(train_nn) != (np.shape(train_full)[0],):
        raise ValueError(f"train_nn must have shape ({np.shape(train_full)[0]},), "
                         f"got {np.shape(train_nn)}")
    threshold = copy_threshold(train_nn, copy_quantile)
    train_n = l2_normalize(train, "train")
    if fake_n.shape[1] != train_n.shape[1]:
        raise ValueError(f"feature dims differ: fake {fake_n.shape[1]} vs train {train_n.shape[1]}")
    nearest = knn_indices(train_n, fake_n, 1)[:, 0]  # (M,) index of nearest subset sample
    sub_dist = np.linalg.norm(fake_n - train_n[nearest], axis=1)  # (M,) float64
    gap = kth_neighbour_radius(train_n, 1)  # (T,) each subset sample's own 1-NN distance
    out = {
        "mem_nn_mean": float(full_dist.mean()),
        "mem_nn_median": float(np.median(full_dist)),
        "mem_copy_rate": float((full_dist < threshold).mean()),
        "mem_subset_nn_mean": float(sub_dist.mean()),
        "mem_subset_nn_median": float(np.median(sub_dist)),
        "mem_subset_copy_rate": float((sub_dist < gap[nearest]).mean()),
    }
    if centroids is not None:
        cent_dist, _ = _nearest_normalized(centroids, fake_n, "centroids")
        out["mem_centroid_nn_mean"] = float(cent_dist.mean())
    return out
