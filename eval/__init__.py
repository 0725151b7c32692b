"""Evaluation metrics over feature arrays: FD/FID, PRDC, Vendi, memorization, coverage.

Pure functions ``compute_<name>(real (N, D), fake (M, D), ...) -> dict[str, float]``
plus the ``METRICS`` registry keyed by the YAML metric names, and the sample-grid PNG
writer. The analysis of the per-trial results (the ``trials.csv`` table, significance
tests, verdicts, the results page) is :mod:`eval.analysis`.
"""

from eval.base import METRICS, MetricInputs
from eval.coverage import balanced_indices, compute_cluster_coverage, nearest_neighbour_labels
from eval.frechet import compute_fd, compute_fid_from_images, frechet_distance
from eval.grid import save_sample_grid
from eval.memorization import compute_memorization
from eval.prdc import compute_prdc
from eval.vendi import compute_vendi, vendi_score

__all__ = [
    "METRICS",
    "MetricInputs",
    "compute_cluster_coverage",
    "compute_fd",
    "compute_fid_from_images",
    "compute_memorization",
    "compute_prdc",
    "compute_vendi",
    "frechet_distance",
    "nearest_neighbour_labels",
    "balanced_indices",
    "save_sample_grid",
    "vendi_score",
]
