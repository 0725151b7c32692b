"""Shared metric inputs and the metric registry.

Every metric is a pure function over feature arrays. The registry maps the exact YAML
metric name to an adapter ``MetricInputs -> dict[str, float]`` so the orchestrator can
loop over configured names without if-chains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from eval.coverage import compute_cluster_coverage
from eval.frechet import compute_fd
from eval.memorization import COPY_QUANTILE, compute_memorization
from eval.prdc import compute_prdc
from eval.vendi import compute_vendi


@dataclass(frozen=True)
class MetricInputs:
    """Features (and optional labels) one evaluation needs.

    Attributes:
        real: (N, D) reference features (FD, PRDC, Vendi compare against them).
        fake: (M, D) generated-sample features.
        train: (T, D) features of the training subset (memorization), or None.
        fake_labels: (M,) int class/cluster of each generated sample, or None.
        reference_labels: (N,) int labels of the reference set, or None.
        num_classes: number of classes/clusters; inferred from labels when None.
        prdc_k: neighbour rank of the PRDC ball radii (config ``eval.prdc_k``).
        train_full: (T_full, D) features of the FULL training set, before pruning
            (memorization's ``mem_nn_*``), or None.
        centroids: (K, D) cluster centres in the same feature space, or None; when
            given, memorization adds ``mem_centroid_nn_mean``.
        train_nn: (T_full,) leave-one-out nearest-neighbour distances within the full
            training set (``eval.memorization.train_nn_distances``, precomputed once per
            dataset), or None: memorization computes them.
        copy_quantile: memorization's ``mem_copy_rate`` threshold, this quantile of
            ``train_nn`` (config ``eval.copy_quantile``).
        predicted_labels: (M,) int class a classifier predicts for each generated sample
            (the ``classifier`` space), or None; when given, cluster_coverage adds
            ``cov_pred_share_<c>`` and ``cov_label_agreement``.
    """

    real: np.ndarray
    fake: np.ndarray
    train: np.ndarray | None = None
    fake_labels: np.ndarray | None = None
    reference_labels: np.ndarray | None = None
    num_classes: int | None = None
    prdc_k: int = 3
    train_full: np.ndarray | None = None
    centroids: np.ndarray | None = None
    train_nn: np.ndarray | None = None
    copy_quantile: float = COPY_QUANTILE
    predicted_labels: np.ndarray | None = None


def _fd(inputs: MetricInputs) -> dict[str, float]:
    """Frechet distance of the generated to the reference features: `fd` (lower = closer;
    `fid` in Inception space)."""
    return compute_fd(inputs.real, inputs.fake)


def _prdc(inputs: MetricInputs) -> dict[str, float]:
    """k-NN precision (fidelity), recall (diversity), density, coverage and their F-score
    (`eval.prdc_k` neighbours): `precision`, `recall`, `density`, `coverage`, `f_score`."""
    return compute_prdc(inputs.real, inputs.fake, k=inputs.prdc_k)


def _vendi(inputs: MetricInputs) -> dict[str, float]:
    """Vendi score of the generated samples (an effective number of distinct samples):
    `vendi`."""
    return compute_vendi(inputs.real, inputs.fake)


def _memorization(inputs: MetricInputs) -> dict[str, float]:
    """Nearest-neighbour distances of the samples to the full training set (`mem_nn_mean`,
    `mem_nn_median`), the share of samples nearer to a training image than the
    `eval.copy_quantile` quantile of the training images' own nearest-neighbour distances
    (`mem_copy_rate`), to the training subset (`mem_subset_nn_mean`, `mem_subset_nn_median`,
    `mem_subset_copy_rate`) and, with `eval.centroids_k`, to k-means centres
    (`mem_centroid_nn_mean`)."""
    if inputs.train is None:
        raise ValueError("metric 'memorization' needs MetricInputs.train (training-subset features)")
    if inputs.train_full is None:
        raise ValueError("metric 'memorization' needs MetricInputs.train_full "
                         "(features of the full training set)")
    return compute_memorization(inputs.real, inputs.fake, train=inputs.train,
                                train_full=inputs.train_full, centroids=inputs.centroids,
                                train_nn=inputs.train_nn, copy_quantile=inputs.copy_quantile)


def _cluster_coverage(inputs: MetricInputs) -> dict[str, float]:
    """How evenly the samples cover the classes (`fake_labels`: each sample's class as the
    evaluation labelled it): KL to uniform `cov_kl_uniform`, to the reference's label shares
    `cov_kl_train`, and each class's share `cov_share_<c>`; in the `classifier` space also
    the classifier's predicted-class shares `cov_pred_share_<c>` and the share of samples
    where both labels agree, `cov_label_agreement`."""
    if inputs.fake_labels is None:
        raise ValueError("metric 'cluster_coverage' needs MetricInputs.fake_labels")
    return compute_cluster_coverage(
        inputs.real,
        inputs.fake,
        fake_labels=inputs.fake_labels,
        reference_labels=inputs.reference_labels,
        num_classes=inputs.num_classes,
        predicted_labels=inputs.predicted_labels,
    )


METRICS: dict[str, Callable[[MetricInputs], dict[str, float]]] = {
    "fd": _fd,
    "prdc": _prdc,
    "vendi": _vendi,
    "memorization": _memorization,
    "cluster_coverage": _cluster_coverage,
}
