"""Cluster/class coverage of generated samples (the skewed-data experiment).

Each generated sample gets a class or cluster id (from a classifier, from the nearest
labelled real sample via ``nearest_neighbour_labels``, or from the nearest centroid);
the metric reports the share of generated samples per class and the KL divergence
``KL(p_fake || u)`` to the uniform distribution and ``KL(p_fake || p_ref)`` to the
reference label distribution. KL uses natural logs and ``0 log 0 = 0``; it is ``inf``
when the generator puts mass on a class the reference set lacks (honest, not smoothed).
Negative labels mean "unlabelled" and are ignored.

With ``predicted_labels`` (a second labeller: the ``classifier`` space's own predicted
class of each sample, a labeller whose held-out accuracy is known) it also reports that
labeller's shares ``cov_pred_share_<c>`` and ``cov_label_agreement``, the share of samples
both labellers put in the same class.
"""

from __future__ import annotations

import numpy as np

from eval.knn import as_features, knn_indices


def nearest_neighbour_labels(ref_feats: np.ndarray, ref_labels: np.ndarray, query_feats: np.ndarray) -> np.ndarray:
    """Label each query with the label of its nearest reference sample (Euclidean).

    Args:
        ref_feats: (N, D) labelled reference features.
        ref_labels: (N,) integer labels.
        query_feats: (M, D) features to label.

    Returns:
        (M,) int64 labels.
    """
    ref = as_features(ref_feats, "ref_feats")
    query = as_features(query_feats, "query_feats")
    labels = np.asarray(ref_labels).astype(np.int64)
    if labels.shape != (ref.shape[0],):
        raise ValueError(f"ref_labels must have shape ({ref.shape[0]},), got {labels.shape}")
    return labels[knn_indices(ref, query, 1)[:, 0]]


def balanced_indices(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of a class-balanced subset of a labelled set.

    A nearest-neighbour labeller over a skewed reference set would favour its large
    classes; labelling against this subset removes that prior.

    Args:
        labels: (N,) integer labels; -1 (unlabelled) is never drawn.
        rng: draws, without replacement, the smallest class's count from every class.

    Returns:
        (C * min count,) int64 indices into ``labels``, sorted.
    """
    labels = np.asarray(labels).astype(np.int64)
    classes, counts = np.unique(labels[labels >= 0], return_counts=True)
    if classes.size == 0:
        raise ValueError("balanced_indices needs at least one label >= 0")
    per = int(counts.min())
    picks = [rng.choice(np.flatnonzero(labels == c), size=per, replace=False) for c in classes]
    return np.sort(np.concatenate(picks))


def nearest_centroid_labels(feats: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(M,) int64 index of the nearest centroid (Euclidean) for each row of feats (M, D)."""
    cents = as_features(centroids, "centroids")
    return knn_indices(cents, as_features(feats, "feats"), 1)[:, 0]


def label_distribution(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(C,) float64 share of each class among non-negative labels (zeros if none)."""
    labels = np.asarray(labels).astype(np.int64).ravel()
    labels = labels[labels >= 0]
    if labels.size and labels.max() >= num_classes:
        raise ValueError(f"label {labels.max()} out of range for num_classes={num_classes}")
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return counts / max(labels.size, 1)


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) in nats for (C,) distributions; inf where p > 0 and q = 0."""
    support = p > 0
    if (q[support] == 0).any():
        return float("inf")
    return float(np.sum(p[support] * np.log(p[support] / q[support])))


def compute_cluster_coverage(
    real: np.ndarray | None,
    fake: np.ndarray,
    fake_labels: np.ndarray | None = None,
    reference_labels: np.ndarray | None = None,
    num_classes: int | None = None,
    centroids: np.ndarray | None = None,
    predicted_labels: np.ndarray | None = None,
) -> dict[str, float]:
    """Share of generated samples per class/cluster and its KL to uniform and reference.

    Args:
        real: (N, D) reference features; used only with ``centroids`` and no
            ``reference_labels`` (reals are then assigned to centroids too).
        fake: (M, D) generated-sample features; used only with ``centroids``.
        fake_labels: (M,) int class/cluster per generated sample; if None, nearest
            centroid.
        reference_labels: (N,) int labels of the reference set.
        num_classes: number of classes C; default: len(centroids) or 1 + max label.
        centroids: (C, D) cluster centres, an alternative to labels.
        predicted_labels: (M,) int class a second labeller (a classifier) predicts for
            each generated sample, or None.

    Returns:
        {"cov_kl_uniform", "cov_share_<c>" for c in range(C)} plus "cov_kl_train"
        when reference labels are given or derivable (centroids + real); with
        ``predicted_labels`` also "cov_pred_share_<c>" for c in range(C) and
        "cov_label_agreement".
    """
    if fake_labels is None:
        if centroids is None:
            raise ValueError("cluster_coverage needs fake_labels or centroids")
        fake_labels = nearest_centroid_labels(fake, centroids)
    if reference_labels is None and centroids is not None and real is not None:
        reference_labels = nearest_centroid_labels(real, centroids)
    if num_classes is None:
        if centroids is not None:
            num_classes = int(np.asarray(centroids).shape[0])
        else:
            seen = [np.asarray(fake_labels).max(initial=-1)]
            if reference_labels is not None:
                seen.append(np.asarray(reference_labels).max(initial=-1))
            num_classes = int(max(seen)) + 1
    if num_classes < 1:
        raise ValueError("cluster_coverage found no labelled samples")

    p = label_distribution(fake_labels, num_classes)
    out = {"cov_kl_uniform": kl_divergence(p, np.full(num_classes, 1.0 / num_classes))}
    if reference_labels is not None:
        out["cov_kl_train"] = kl_divergence(p, label_distribution(reference_labels, num_classes))
    out.update({f"cov_share_{c}": float(p[c]) for c in range(num_classes)})
    if predicted_labels is not None:
        pred = np.asarray(predicted_labels).astype(np.int64).ravel()
        if pred.shape != np.shape(fake_labels):
            raise ValueError(f"predicted_labels must have shape {np.shape(fake_labels)}, "
                             f"got {pred.shape}")
        q = label_distribution(pred, num_classes)
        out.update({f"cov_pred_share_{c}": float(q[c]) for c in range(num_classes)})
        out["cov_label_agreement"] = label_agreement(pred, fake_labels)
    return out


def label_agreement(labels_a: np.ndarray, labels_b: np.ndarray) -> float:
    """Share of samples two labellers give the same class.

    Args:
        labels_a: (M,) int labels of the first labeller.
        labels_b: (M,) int labels of the second.

    Returns:
        The share in [0, 1] (NaN for M = 0).
    """
    a, b = np.asarray(labels_a).ravel(), np.asarray(labels_b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"labels need equal lengths, got {a.shape} and {b.shape}")
    return float((a == b).mean()) if a.size else float("nan")
