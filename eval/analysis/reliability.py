"""Reliability of the pruning scores: split-half and proxy-to-proxy rank correlation.

A statistic method (monotonicity, EL2N, GraNd, MoSo) ranks the training images by a
score measured on a small proxy model. If two independent measurements of the same
score (two halves of its noise draws, or two proxies trained with different seeds)
rank the images differently, the selection is mostly noise and so is any verdict about
the method. Spearman's rho of the two measurements says how much: a method under
:data:`THRESHOLD` is flagged in the table.

Pure numpy/scipy/pandas; the orchestrator computes the two score vectors and feeds
them here (the report shows :func:`reliability_table`).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd
from scipy import stats

THRESHOLD = 0.5


def split_half_rho(scores_a: np.ndarray, scores_b: np.ndarray) -> float:
    """Spearman rank correlation of two measurements of the same per-image score.

    Use it for split-half reliability (each half of the draws) and for proxy-to-proxy
    reliability (two proxies, two seeds); ties get average ranks.

    Args:
        scores_a: (N,) first measurement, one score per training image.
        scores_b: (N,) second measurement, same images in the same order.

    Returns:
        rho in [-1, 1] over the images where both are finite; NaN with fewer than 3
        such images or a constant measurement.

    Raises:
        ValueError: the two arrays differ in length.
    """
    a = np.asarray(scores_a, dtype=np.float64).ravel()
    b = np.asarray(scores_b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"scores need equal lengths, got {a.shape} and {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(stats.spearmanr(a, b).statistic)


def spearman_brown(rho_half: float) -> float:
    """Reliability of the full-length score from a split-half rho: ``2 rho / (1 + rho)``."""
    if not math.isfinite(rho_half) or rho_half <= -1:
        return math.nan
    return 2 * rho_half / (1 + rho_half)


def reliability_table(split_half: Mapping[str, float],
                      proxy_to_proxy: Mapping[str, float] | None = None,
                      threshold: float = THRESHOLD) -> pd.DataFrame:
    """One row per statistic method: its rhos and whether it is flagged.

    Args:
        split_half: method label -> split-half rho (:func:`split_half_rho`).
        proxy_to_proxy: method label -> rho between two proxies' scores (None or a
            missing label: "not measured").
        threshold: a method with any measured rho under it is flagged.

    Returns:
        Columns ``method, split_half_rho, proxy_to_proxy_rho, flag``; ``flag`` is
        ``"unreliable (rho < 0.5)"``, ``"not measured"`` when no rho is finite, else "".
    """
    p2p = dict(proxy_to_proxy or {})
    rows = []
    for method in dict.fromkeys([*split_half, *p2p]):
        sh, pp = split_half.get(method, math.nan), p2p.get(method, math.nan)
        measured = [r for r in (sh, pp) if r is not None and math.isfinite(r)]
        if not measured:
            flag = "not measured"
        elif min(measured) < threshold:
            flag = f"unreliable (rho < {threshold:g})"
        else:
            flag = ""
        rows.append({"method": method, "split_half_rho": sh, "proxy_to_proxy_rho": pp, "flag": flag})
    return pd.DataFrame(rows, columns=["method", "split_half_rho", "proxy_to_proxy_rho", "flag"])


def reliability_markdown(table: pd.DataFrame) -> str:
    """The table as Markdown (rho to 2 decimals, "not measured" for NaN)."""
    def cell(x: float) -> str:
        return f"{x:+.2f}" if isinstance(x, float) and math.isfinite(x) else "not measured"

    lines = ["| method | split-half rho | proxy-to-proxy rho | flag |", "|---|---|---|---|"]
    lines += [f"| {r.method} | {cell(r.split_half_rho)} | {cell(r.proxy_to_proxy_rho)} | {r.flag} |"
              for r in table.itertuples()]
    return "\n".join(lines) + f"\n\nSpearman rank correlation of two measurements of each score; " \
                              f"a method under {THRESHOLD:g} is flagged: its selection is mostly noise.\n"
