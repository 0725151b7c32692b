"""``--dry-run``'s weights lines and held-out reference size warnings.

:func:`describe_weights` names every weight file a run will use and where it was found,
with the same rules every Ray actor applies when it builds the embedder
(``models/weights.py``), without downloading or loading anything. :func:`reference_warnings`
flags held-out references too small for the configured metrics: PRDC's k-NN radii need at
least ``10 x eval.prdc_k`` images, and the Frechet distance needs a full-rank covariance,
i.e. more images than the evaluation space has feature dimensions (a covariance of n points
has rank at most n - 1).

No Ray here (the dry-run never imports it); importing ``models`` imports torch only.
"""
from __future__ import annotations

from typing import Any

from models import EMBEDDERS
from models.weights import hf_cache_dir, locate_weights, offline
from orchestrator.config.schema import TRAINED_SPACE, Config
from orchestrator.data.sources import reference_count

PRDC_PER_K = 10   # reference images per PRDC neighbour rank, at the least


def needed_embedders(cfg: Config) -> list[str]:
    """Configured embedders, those the pruning methods use, and the evaluation spaces: the
    embeddings a run computes (the embed stage's list; the dry-run's)."""
    names = list(cfg.embed.embedders)
    for m in cfg.pruning.methods:
        for ds in cfg.data.datasets:
            emb = m.build_pruner(ds.name).embedder
            if emb:
                names.append(emb)
    names.extend(cfg.eval.embedders)
    return list(dict.fromkeys(names))


def describe_weights(cfg: Config) -> list[str]:
    """One line per needed embedder: its weight file and where it was found.

    "given path", "local file", "HF cache", "file shipped in its package", "will download
    from <repo or URL> ... on first use", or "missing: put <file> at <path>"; the trained
    ``classifier`` space and ``pixels`` have no file to find.
    """
    mode = "offline" if offline() else "online"
    lines = [f"weights (found the same way in every Ray actor, nothing loaded here; {mode}, "
             f"HF cache {hf_cache_dir()}):"]
    for name in needed_embedders(cfg):
        path = cfg.embed.weights.get(name)
        if name == TRAINED_SPACE and path is None:
            lines.append(f"  {name}: trained per dataset in the embed stage (no file to find)")
            continue
        lines.append(f"  {name}: {locate_weights(name, path).detail}")
    return lines


def feature_dim(name: str) -> int:
    """Feature dimension D of evaluation space ``name`` (``models.EMBEDDERS``)."""
    return int(EMBEDDERS[name].dim)


def _reference_size(ds: Any, cap: int) -> int | None:
    try:
        n = reference_count(ds, cap)
    except Exception:   # unreachable path or bucket: counted at run time
        return None
    return None if n is None else int(n)


def reference_warnings(cfg: Config, sizes: dict[str, int | None] | None = None) -> list[str]:
    """``warning: ...`` lines for held-out references too small for the metrics.

    Args:
        cfg: the resolved config (``eval.metrics``, ``eval.prdc_k``, ``eval.embedders``,
            ``eval.num_real``).
        sizes: dataset name -> reference image count (default: counted by the source,
            capped at ``eval.num_real``; None = unknown, then only the cap is checked).
    """
    ev, out = cfg.eval, []
    for ds in cfg.data.datasets:
        n = sizes.get(ds.name) if sizes is not None else _reference_size(ds, ev.num_real)
        bound, what = (n, f"{n} images") if n is not None else (
            ev.num_real, f"at most eval.num_real = {ev.num_real} images")
        fix = "raise eval.num_real or the reference's size (holdout, reference split)"
        if "prdc" in ev.metrics and bound < PRDC_PER_K * ev.prdc_k:
            out.append(f"warning: {ds.name}: the held-out reference has {what}, fewer than "
                       f"{PRDC_PER_K} x eval.prdc_k = {PRDC_PER_K * ev.prdc_k}: PRDC's k-NN "
                       f"radii are unreliable; {fix}")
        if "fd" in ev.metrics:
            for space in ev.embedders:
                dim = feature_dim(space)
                if bound <= dim:
                    out.append(f"warning: {ds.name}: the held-out reference has {what}, not "
                               f"more than the {dim} feature dimensions of {space}: the Frechet "
                               f"distance needs at least {dim + 1} for a full-rank covariance; "
                               f"{fix}, or drop fd")
    return out
