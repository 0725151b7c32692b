"""Evaluation metrics over feature arrays: FD/FID, PRDC, Vendi, memorization, coverage."""

from eval.base import METRICS, MetricInputs

__all__ = ["METRICS", "MetricInputs"]
