"""Score + select stages: each method scored once per (dataset, method, seed), reused by
every ratio; each subset saved with the sample ids it keeps.

Scoring and selection run in Ray tasks (one per (dataset, method, seed), with a worker's
resources: k-means gets the GPU when the cluster has one), reading the embeddings and
proxy statistics from the artifact store there; the driver holds only cache keys. Keys:

- score:  data fingerprint, method name + params, seed, and the keys of the
  embeddings / statistics the method reads;
- subset: the score key and the ratio (the full-data baseline: fingerprint only).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from orchestrator.progress import say
from orchestrator.storage.cache import ArtifactCache
from orchestrator.storage.tables import Table

SCORE_VERSION = 2    # 2: arrays ids + scores, inputs read from tables
SUBSET_VERSION = 2   # 2: the manifest names its score artifact, not every id
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
    lat = Table(cache, art.latents).read(["label"])
    ids, labels = lat["id"], lat["label"].astype(np.int64)
    embeddings = {}
    if pruner.embedder:
        emb = Table(cache, art.embeddings[pruner.embedder]).read(["features"])
        if not np.array_equal(emb["id"], ids):
            raise RuntimeError(f"{art.name}: the {pruner.embedder} features and the latents "
                               "cover different samples")
        embeddings[pruner.embedder] = emb["features"]
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
    arrays = {"ids": ids, "scores": scores}
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
    if score_key is None:
        ids = Table(cache, art.latents).column("id")
        indices = np.arange(len(ids), dtype=np.int64)
    else:
        sc = cache.load_arrays(score_key)
        ids = sc["ids"].astype(np.int64)
        result = ScoreResult(scores=sc["scores"], groups=sc.get("groups"))
        indices = np.asarray(pruner.select(result, float(ratio), ratio_rng(seed, ratio)), dtype=np.int64)
    if len(indices) == 0:
        raise ValueError(f"{art.name}/{method_label} at ratio {ratio} keeps no samples")
    kept_ids = ids[indices]
    cache.save_arrays(key, indices=indices, ids=kept_ids)
    cache.save_json(key, {"dataset": art.name, "method": method_label, "ratio": float(ratio),
                          "seed": seed, "n_total": int(len(ids)), "n_train": int(len(indices)),
                          "subset_hash": subset_hash(indices), "score": score_key})
    return key


def score_and_select(cache_root: str, method: Any, seed: int, art: DatasetArtifacts,
                     ratios: list[float], fresh: bool) -> dict[float, str]:
    """One method's scores for one seed, then its subset at every ratio: ``{ratio: key}``.

    Runs where the scores are computed (a Ray task of :func:`build_subsets`): the
    embeddings and statistics are read there, never on the driver.
    """
    cache = ArtifactCache(cache_root)
    score_key, pruner = ensure_scores(cache, method, seed, art, fresh)
    return {float(r): ensure_subset(cache, art, method.label, r, seed, score_key, pruner, fresh)
            for r in ratios}


def build_subsets(cache: ArtifactCache, cfg: Any, arts: dict[str, DatasetArtifacts],
                  fresh: bool, run: Callable[[Callable, list[tuple]], list] | None = None
                  ) -> dict[tuple[str, str, float, int], str]:
    """Subset keys of every trial of the grid, ``(dataset, method, ratio, seed) -> key``.

    ``run(fn, calls)`` runs ``fn(*args)`` for each of ``calls`` and returns the results in
    order (the pipeline passes Ray tasks with a worker's resources, so k-means gets the
    GPU when there is one); the default runs them here, one after another.
    """
    jobs = [(seed, ds, m) for seed in cfg.experiment.seeds for ds in cfg.data.datasets
            for m in cfg.pruning.methods]
    calls = [(cache.root, m, seed, arts[ds.name], [float(r) for r in cfg.pruning.ratios], fresh)
             for seed, ds, m in jobs]
    say("score+select: %d (dataset, method, seed) job(s)", len(calls))
    results = (run or _run_here)(score_and_select, calls)
    out: dict[tuple[str, str, float, int], str] = {}
    for (seed, ds, m), by_ratio in zip(jobs, results):
        for ratio, key in by_ratio.items():
            out[(ds.name, m.label, ratio, seed)] = key
    if cfg.pruning.baseline:
        for seed in cfg.experiment.seeds:
            for ds in cfg.data.datasets:
                out[(ds.name, FULL, 0.0, seed)] = ensure_subset(
                    cache, arts[ds.name], FULL, 0.0, seed, None, None, fresh)
    return out


def _run_here(fn: Callable, calls: list[tuple]) -> list:
    return [fn(*args) for args in calls]


def statistic_methods(cfg: Any, dataset: str) -> list[Any]:
    """The configured methods of ``dataset`` that score from proxy statistics (``needs_stats``)."""
    return [m for m in cfg.pruning.methods if m.build_pruner(dataset).needs_stats]


def score_reliability(cache: ArtifactCache, cfg: Any, arts: dict[str, DatasetArtifacts],
                      subsets: dict[tuple[str, str, float, int], str]) -> list[dict[str, Any]]:
    """Proxy-to-proxy reliability of every statistic method's scores (issue 24 item 5).

    Each experiment seed trains its own proxy, so two seeds' scores of one method are two
    independent measurements of the same per-image score: their Spearman rho
    (``eval.analysis.reliability.split_half_rho``, images aligned by id) says how much of
    the ranking is the images and how much is the proxy. With S seeds every one of the
    S (S - 1) / 2 pairs is measured; a row reports their mean, min and max. The scores are
    read from the score artifacts the subsets name (manifest ``score``), so this needs no
    recomputation. Split-half rho (two halves of one proxy's draws) is not measured here:
    the proxy keeps the mean over its draws only (``split_half_rho`` is NaN).

    Args:
        cache: the artifact cache.
        cfg: the run's config (``pruning.methods``, ``experiment.seeds``).
        arts: dataset name -> its artifacts.
        subsets: ``build_subsets``' ``(dataset, method label, ratio, seed) -> subset key``.

    Returns:
        One dict per (dataset, statistic method): ``dataset, method, split_half_rho,
        proxy_to_proxy_rho`` (mean over seed pairs; NaN with fewer than two seeds),
        ``proxy_to_proxy_min``, ``proxy_to_proxy_max``, ``seed_pairs``, ``seeds``. Feed a
        dataset's rows to :func:`reliability_frame` for ``eval.analysis.reliability_table``.
    """
    from eval.analysis.reliability import split_half_rho

    rows = []
    for ds in arts:
        for method in statistic_methods(cfg, ds):
            keys = {}
            for (d, label, _ratio, seed), key in sorted(subsets.items()):
                if d == ds and label == method.label and seed not in keys:
                    keys[seed] = cache.load_json(key)["score"]
            scores = {seed: cache.load_arrays(k) for seed, k in keys.items() if k}
            seeds = sorted(scores)
            rhos = [_aligned_rho(scores[a], scores[b], split_half_rho)
                    for i, a in enumerate(seeds) for b in seeds[i + 1:]]
            rhos = [r for r in rhos if np.isfinite(r)]
            rows.append({"dataset": ds, "method": method.label, "split_half_rho": float("nan"),
                         "proxy_to_proxy_rho": float(np.mean(rhos)) if rhos else float("nan"),
                         "proxy_to_proxy_min": float(min(rhos)) if rhos else float("nan"),
                         "proxy_to_proxy_max": float(max(rhos)) if rhos else float("nan"),
                         "seed_pairs": len(rhos), "seeds": ",".join(map(str, seeds))})
    return rows


def _aligned_rho(a: dict[str, np.ndarray], b: dict[str, np.ndarray], rho: Callable) -> float:
    """rho of two score artifacts (``ids``, ``scores``) over the ids both scored."""
    common, ia, ib = np.intersect1d(a["ids"], b["ids"], return_indices=True)
    del common
    return float(rho(a["scores"][ia], b["scores"][ib]))


def reliability_frame(rows: list[dict[str, Any]], dataset: str | None = None) -> Any:
    """:func:`score_reliability` rows of one dataset as ``eval.analysis.reliability_table``
    (columns ``method, split_half_rho, proxy_to_proxy_rho, flag``; ``dataset`` None: the
    only dataset of the rows)."""
    from eval.analysis.reliability import reliability_table

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    if dataset is None:
        if len(datasets) > 1:
            raise ValueError(f"rows of several datasets {datasets}: name one")
        dataset = datasets[0] if datasets else ""
    mine = [r for r in rows if r["dataset"] == dataset]
    return reliability_table({r["method"]: r["split_half_rho"] for r in mine},
                             {r["method"]: r["proxy_to_proxy_rho"] for r in mine})


def reliability_section(cache: ArtifactCache, cfg: Any, arts: dict[str, DatasetArtifacts],
                        subsets: dict[tuple[str, str, float, int], str]) -> str:
    """Markdown of every dataset's :func:`score_reliability` table ("" when no method uses
    proxy statistics); a method whose scores agree with rho < 0.5 across proxies is flagged."""
    from eval.analysis.reliability import reliability_markdown

    rows = score_reliability(cache, cfg, arts, subsets)
    if not rows:
        return ""
    parts = ["\n## Score reliability\n",
             "Spearman's rho between the scores of two proxies (one per experiment seed, "
             "mean over seed pairs); split-half rho is not measured yet (the proxy keeps "
             "only the mean over its draws).\n"]
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        parts += [f"\n### {ds}\n", reliability_markdown(reliability_frame(rows, ds))]
    return "\n".join(parts) + "\n"
