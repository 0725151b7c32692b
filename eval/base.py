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
from eval.memorization import compute_memorization
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


def _fd(inputs: MetricInputs) -> dict[str, float]:
    return compute_fd(inputs.real, inputs.fake)


def _prdc(inputs: MetricInputs) -> dict[str, float]:
    return compute_prdc(inputs.real, inputs.fake, k=inputs.prdc_k)


def _vendi(inputs: MetricInputs) -> dict[str, float]:
    return compute_vendi(inputs.real, inputs.fake)


def _memorization(inputs: MetricInputs) -> dict[str, float]:
    if inputs.train is None:
        raise ValueError("metric 'memorization' needs MetricInputs.train (training-subset features)")
    if inputs.train_full is None:
        raise ValueError("metric 'memorization' needs MetricInputs.train_full "
                         "(features of the full training set)")
    return compute_memorization(inputs.real, inputs.fake, train=inputs.train,
                                train_full=inputs.train_full, centroids=inputs.centroids)


def _cluster_coverage(inputs: MetricInputs) -> dict[str, float]:
    if inputs.fake_labels is None:
        raise ValueError("metric 'cluster_coverage' needs MetricInputs.fake_labels")
    return compute_cluster_coverage(
        inputs.real,
        inputs.fake,
        fake_labels=inputs.fake_labels,
        reference_labels=inputs.reference_labels,
        num_classes=inputs.num_classes,
    )


METRICS: dict[str, Callable[[MetricInputs], dict[str, float]]] = {
    "fd": _fd,
    "prdc": _prdc,
    "vendi": _vendi,
    "memorization": _memorization,
    "cluster_coverage": _cluster_coverage,
}
