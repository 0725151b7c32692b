"""Score + select stages: each method scored once per (dataset, method, seed), reused by
every ratio; each subset saved with a manifest of the sample ids it keeps.

Scoring runs on the driver (numpy / faiss over cached arrays; the expensive inputs,
embeddings and proxy statistics, come from earlier stages). Keys:

- score:  data fingerprint, method name + params, seed, and the keys of the
  embeddings / statistics the method reads;
- subset: the score key and the ratio (the full-data baseline: fingerprint only).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orchestrator.progress import say
from orchestrator.storage.cache import ArtifactCache

SCORE_VERSION = 1
SUBSET_VERSION = 1
FULL = "full"


@dataclass(frozen=True)
class DatasetArtifacts:
    """Cache keys of one dataset's upstream artifacts.

    Attributes:
        embeddings: embedder name -> features of the training images.
        proxy: experiment seed -> proxy statistics (None: no method needs them).
        reference: eval embedder name -> features of the held-out reference
            (``orchestrator.stages.embed.ensure_reference``).
        reference_origin, reference_size: where the reference comes from, its images.
    """

    name: str
    fingerprint: str
    num_classes: int
    vqvae: str
    latents: str
    embeddings: dict[str, str]
    proxy: dict[int, str] | None                           # experiment seed -> stats key
    trained: dict[str, dict] = field(default_factory=dict)  # embed.ensure_trained_spaces
    reference: dict[str, str] = field(default_factory=dict)  # eval embedder -> held-out features
    reference_origin: str = ""
    reference_size: int = 0


def subset_hash(indices: np.ndarray) -> str:
    """Short sha256 of the sorted kept indices (names the subset in MLflow)."""
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]


def ratio_rng(seed: int, ratio: float) -> np.random.Generator:
    """The Generator breaking ties for one (seed, ratio) selection."""
    return np.random.default_rng([seed, int(round(ratio * 10_000))])


def ensure_scores(cache: ArtifactCache, method: Any, seed: int, art: DatasetArtifacts,
                  fresh: bool) -> tuple[str, Any]:
    """(score key, pruner) after scoring the dataset with one configured method."""
    from pruning import ScoreContext

    params = method.params_for(art.name)  # per-dataset overrides (paper: k=24 vs 1000)
    pruner = method.build_pruner(art.name)
    inputs: dict[str, Any] = {}
    if pruner.embedder:
        inputs["embedding"] = art.embeddings[pruner.embedder]
    if pruner.needs_stats:
        inputs["proxy"] = art.proxy[seed]   # the proxy run of this experiment seed
    key = cache.key("score", SCORE_VERSION, fingerprint=art.fingerprint, method=method.name,
                    params=params, seed=seed, inputs=inputs)
    if not fresh and cache.has(key, "arrays"):
        return key, pruner
    lat = cache.load_arrays(art.latents)
    labels = lat["labels"].astype(np.int64)
    embeddings = {}
    if pruner.embedder:
        embeddings[pruner.embedder] = cache.load_arrays(art.embeddings[pruner.embedder])["features"]
    stats = {}
    if pruner.needs_stats:
        proxy = cache.load_arrays(art.proxy[seed])
        stats = {k: proxy[k] for k in pruner.needs_stats}
    ctx = ScoreContext(n=len(labels), seed=seed, labels=labels, embeddings=embeddings, stats=stats)
    result = pruner.score(ctx)
    scores = np.asarray(result.scores, dtype=np.float64)
    if scores.shape != (len(labels),) or not np.isfinite(scores).all():
        raise ValueError(f"pruning method '{method.label}' returned invalid scores "
                         f"(shape {scores.shape}, finite={np.isfinite(scores).all()})")
    arrays = {"scores": scores}
    if result.groups is not None:
        arrays["groups"] = np.asarray(result.groups, dtype=np.int64)
    cache.save_arrays(key, **arrays)
    cache.save_json(key, {"method": method.name, "label": method.label, "params": params,
                          "seed": seed, "meta": result.meta})
    say("score[%s/%s/seed %d]: scored %d samples", art.name, method.label, seed, len(scores))
    return key, pruner


def ensure_subset(cache: ArtifactCache, art: DatasetArtifacts, method_label: str, ratio: float,
                  seed: int, score_key: str | None, pruner: Any, fresh: bool) -> str:
    """Cache key of a subset (arrays ``indices``, ``ids``; json manifest)."""
    from pruning import ScoreResult

    if score_key is None:
        key = cache.key("subset", SUBSET_VERSION, fingerprint=art.fingerprint, method=FULL)
    else:
        key = cache.key("subset", SUBSET_VERSION, score=score_key, ratio=float(ratio))
    if not fresh and cache.has(key, "arrays") and cache.has(key, "json"):
        return key
    ids = cache.load_arrays(art.latents)["ids"].astype(np.int64)
    if score_key is None:
        indices = np.arange(len(ids), dtype=np.int64)
    else:
        sc = cache.load_arrays(score_key)
        result = ScoreResult(scores=sc["scores"], groups=sc.get("groups"))
        indices = np.asarray(pruner.select(result, float(ratio), ratio_rng(seed, ratio)), dtype=np.int64)
    if len(indices) == 0:
        raise ValueError(f"{art.name}/{method_label} at ratio {ratio} keeps no samples")
    kept_ids = ids[indices]
    cache.save_arrays(key, indices=indices, ids=kept_ids)
    cache.save_json(key, {"dataset": art.name, "method": method_label, "ratio": float(ratio),
                          "seed": seed, "n_total": int(len(ids)), "n_train": int(len(indices)),
                          "subset_hash": subset_hash(indices), "ids": kept_ids.tolist()})
    return key


def build_subsets(cache: ArtifactCache, cfg: Any, arts: dict[str, DatasetArtifacts],
                  fresh: bool) -> dict[tuple[str, str, float, int], str]:
    """Subset keys of every trial of the grid, ``(dataset, method, ratio, seed) -> key``."""
    from orchestrator.progress import progress

    out: dict[tuple[str, str, float, int], str] = {}
    jobs = [(seed, ds, m) for seed in cfg.experiment.seeds for ds in cfg.data.datasets
            for m in cfg.pruning.methods]
    for seed, ds, m in progress(jobs, "score+select"):
        art = arts[ds.name]
        score_key, pruner = ensure_scores(cache, m, seed, art, fresh)
        for ratio in cfg.pruning.ratios:
            out[(ds.name, m.label, float(ratio), seed)] = ensure_subset(
                cache, art, m.label, ratio, seed, score_key, pruner, fresh)
    if cfg.pruning.baseline:
        for seed in cfg.experiment.seeds:
            for ds in cfg.data.datasets:
                out[(ds.name, FULL, 0.0, seed)] = ensure_subset(
                    cache, arts[ds.name], FULL, 0.0, seed, None, None, fresh)
    return out
