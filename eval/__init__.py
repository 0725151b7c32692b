"""Evaluation metrics over feature arrays: FD/FID, PRDC, Vendi, memorization, coverage.

Pure functions ``compute_<name>(real (N, D), fake (M, D), ...) -> dict[str, float]``
plus the ``METRICS`` registry keyed by the YAML metric names; significance tests over
per-seed results (:mod:`eval.significance`), the ``trials.csv`` format they read
(:mod:`eval.trials`) and the verdict tables on the paper's claims (:mod:`eval.verdicts`).
"""

from eval.base import METRICS, MetricInputs
from eval.coverage import balanced_indices, compute_cluster_coverage, nearest_neighbour_labels
from eval.frechet import compute_fd, compute_fid_from_images, frechet_distance
from eval.grid import save_sample_grid
from eval.memorization import compute_memorization
from eval.prdc import compute_prdc
from eval.significance import WelchResult, bootstrap_ci, holm, welch_test
from eval.trials import TRIAL_KEYS, TrialsError, check_trials, read_trials, trials_frame
from eval.vendi import compute_vendi, vendi_score

__all__ = [
    "METRICS",
    "MetricInputs",
    "TRIAL_KEYS",
    "TrialsError",
    "WelchResult",
    "bootstrap_ci",
    "check_trials",
    "compute_cluster_coverage",
    "compute_fd",
    "compute_fid_from_images",
    "compute_memorization",
    "compute_prdc",
    "compute_vendi",
    "frechet_distance",
    "holm",
    "nearest_neighbour_labels",
    "balanced_indices",
    "read_trials",
    "save_sample_grid",
    "trials_frame",
    "vendi_score",
    "welch_test",
]
