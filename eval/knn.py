"""Exact nearest-neighbour helpers shared by the metrics.

faiss finds the neighbours (exact flat L2 index, float32); the distances the metrics
compare are then recomputed in float64 from the raw vectors, so thresholds agree with
a float64 brute force up to rounding, not float32 cancellation error.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

try:  # the `cpu` or `gpu` extra (setup.cfg); without either, numpy blocks find the neighbours
    import faiss
except ImportError:
    faiss = None

# Peak bytes of one float64 distance block: big enough for BLAS efficiency, small
# enough that 50k x 50k evaluations never hold an N x M matrix.
BLOCK_BYTES = 256 * 2**20
# Relative size of float64 rounding noise in a squared distance from the expansion
# (about 1e-16 * sqrt(D) * |x|^2); far above it for D up to 1e6, far below any real gap.
DUPLICATE_RTOL = 1e-12


def as_features(x: np.ndarray, name: str) -> np.ndarray:
    """Validate a feature matrix and return it as float64.

    Args:
        x: (N, D) features.
        name: argument name for error messages.

    Returns:
        (N, D) float64 array.
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) array, got shape {x.shape}")
    x = x.astype(np.float64, copy=False)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def knn_indices(base: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k nearest base rows (Euclidean) for every query row.

    Args:
        base: (N, D) features searched.
        query: (M, D) features.
        k: neighbours per query; must be <= N.

    Returns:
        (M, k) int64 indices, nearest first.
    """
    if k > base.shape[0]:
        raise ValueError(f"k={k} neighbours requested but only {base.shape[0]} points")
    if faiss is None:
        out = np.empty((query.shape[0], k), dtype=np.int64)
        q64, b64 = np.asarray(query, np.float64), np.asarray(base, np.float64)
        for rows, d2 in sq_distance_blocks(q64, b64):
            part = np.argpartition(d2, k - 1, axis=1)[:, :k]
            order = np.take_along_axis(d2, part, axis=1).argsort(axis=1, kind="stable")
            out[rows] = np.take_along_axis(part, order, axis=1)
        return out
    index = faiss.IndexFlatL2(base.shape[1])
    index.add(np.ascontiguousarray(base, dtype=np.float32))
    _, idx = index.search(np.ascontiguousarray(query, dtype=np.float32), k)
    return idx.astype(np.int64)


def knn_distances(base: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """Float64 Euclidean distances to the k nearest base rows, ascending.

    faiss picks the candidates; distances are recomputed exactly in float64 and
    re-sorted, so only near-ties (below float32 resolution) can pick a different
    neighbour, and those have the same distance to that resolution.

    Args:
        base: (N, D) features.
        query: (M, D) features.
        k: neighbours per query.

    Returns:
        (M, k) float64 distances, ascending along axis 1.
    """
    idx = knn_indices(base, query, k)
    out = np.empty(idx.shape, dtype=np.float64)
    rows = max(1, BLOCK_BYTES // (8 * k * base.shape[1]))
    for start in range(0, query.shape[0], rows):
        q = query[start : start + rows, None, :]
        diff = base[idx[start : start + rows]] - q  # (b, k, D)
        out[start : start + rows] = np.sqrt(np.einsum("bkd,bkd->bk", diff, diff))
    out.sort(axis=1)
    return out


def kth_neighbour_radius(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row to its k-th nearest *other* row of the same set.

    Searching k + 1 neighbours and taking the last skips the point itself (distance
    0); with duplicates the self match may land elsewhere but the value is the same.

    Args:
        x: (N, D) features, N > k.
        k: neighbour rank (k=3 for PRDC, 1 for the copy detector).

    Returns:
        (N,) float64 radii.
    """
    if x.shape[0] <= k:
        raise ValueError(f"need more than k={k} points for a k-NN radius, got {x.shape[0]}")
    return knn_distances(x, x, k + 1)[:, k]


def sq_distance_blocks(a: np.ndarray, b: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield row blocks of the squared-distance matrix between a and b, in float64.

    Args:
        a: (N, D) float64.
        b: (M, D) float64.

    Yields:
        (rows, d2) with rows a slice of a's rows and d2 (len(rows), M) float64.
        The expansion |a|^2 + |b|^2 - 2ab leaves rounding noise where a == b, so
        values below ``DUPLICATE_RTOL * (|a|^2 + |b|^2)`` are set to exactly 0: a
        generated copy of a sample must count as inside a zero-radius ball.
    """
    a_sq = np.einsum("nd,nd->n", a, a)
    b_sq = np.einsum("md,md->m", b, b)
    rows = max(1, BLOCK_BYTES // (8 * b.shape[0]))
    for start in range(0, a.shape[0], rows):
        sl = slice(start, min(start + rows, a.shape[0]))
        d2 = a[sl] @ b.T
        d2 *= -2.0
        d2 += a_sq[sl, None]
        d2 += b_sq[None, :]
        noise = a_sq[sl, None] + b_sq[None, :]
        noise *= DUPLICATE_RTOL
        d2[d2 <= noise] = 0.0
        yield sl, d2
