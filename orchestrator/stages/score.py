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

from orchestrator.config.plan import TrialPlan
from orchestrator.config.schema import Config, MethodConfig
from orchestrator.progress import say
from orchestrator.storage.cache import ArtifactCache
from orchestrator.storage.tables import Table
from pruning import ScoreContext, ScoreResult
from pruning.stats_halves import HALVES, half_key

# 2: arrays ids + scores, inputs read from tables. A statistic method's artifact also holds
# scores_half_a / scores_half_b (its scores from each half of the proxy's draws, proxy
# version 4 on; the proxy key is part of its key, so no older artifact is read as one)
SCORE_VERSION = 2
SUBSET_VERSION = 2   # 2: the manifest names its score artifact, not every id
FULL = "full"
# score-artifact arrays of a statistic method's scores from each half (pruning.stats_halves.HALVES)
HALF_SCORES = {"a": "scores_half_a", "b": "scores_half_b"}


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


def ensure_scores(cache: ArtifactCache, method: MethodConfig, seed: int, art: DatasetArtifacts,
                  fresh: bool) -> tuple[str, Any]:
    """(score key, pruner) after scoring the dataset with one configured method.

    A statistic method is also scored, by the same code, on each half of the proxy's draws
    (arrays ``scores_half_a``, ``scores_half_b``, (N,) float64 in ``ids`` order) when the
    proxy recorded the halves of every statistic it reads; else the json's ``split_half``
    says why not (:func:`score_reliability` reads both).
    """
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
    stats, proxy = {}, {}
    if pruner.needs_stats:
        proxy = cache.load_arrays(art.proxy[seed])
        stats = {k: proxy[k] for k in pruner.needs_stats}

    def score_with(columns: dict[str, np.ndarray]) -> tuple[Any, np.ndarray]:
        ctx = ScoreContext(n=len(labels), seed=seed, labels=labels, embeddings=embeddings,
                           stats=columns)
        result = pruner.score(ctx)
        scores = np.asarray(result.scores, dtype=np.float64)
        if scores.shape != (len(labels),) or not np.isfinite(scores).all():
            raise ValueError(f"pruning method '{method.label}' returned invalid scores "
                             f"(shape {scores.shape}, finite={np.isfinite(scores).all()})")
        return result, scores

    result, scores = score_with(stats)
    arrays = {"ids": ids, "scores": scores}
    if result.groups is not None:
        arrays["groups"] = np.asarray(result.groups, dtype=np.int64)
    split_half = ""
    if pruner.needs_stats:
        split_half = _missing_halves(cache, art.proxy[seed], pruner.needs_stats, proxy)
        if not split_half:   # the same scoring code on each half of the proxy's draws
            for half in HALF_SCORES:
                arrays[HALF_SCORES[half]] = score_with(
                    {k: proxy[half_key(k, half)] for k in pruner.needs_stats})[1]
    cache.save_arrays(key, **arrays)
    cache.save_json(key, {"method": method.name, "label": method.label, "params": params,
                          "seed": seed, "meta": result.meta, "split_half": split_half})
    say("score[%s/%s/seed %d]: scored %d samples", art.name, method.label, seed, len(scores))
    return key, pruner


def _missing_halves(cache: ArtifactCache, proxy_key: str, needs: tuple[str, ...],
                    proxy: dict[str, np.ndarray]) -> str:
    """"" when the proxy recorded both halves of every statistic in ``needs``, else why not
    (the proxy record's reason, e.g. a statistic of a single draw)."""
    lacking = [k for k in needs if any(half_key(k, h) not in proxy for h in HALVES)]
    if not lacking:
        return ""
    record = cache.load_json(proxy_key) if cache.has(proxy_key, "json") else {}
    reasons = [(record.get("halves") or {}).get(k) or f"{k}: the proxy recorded no halves"
               for k in lacking]
    return "; ".join(reasons)


def ensure_subset(cache: ArtifactCache, art: DatasetArtifacts, method_label: str, ratio: float,
                  seed: int, score_key: str | None, pruner: Any, fresh: bool) -> str:
    """Cache key of a subset (arrays ``indices``, ``ids``; json manifest)."""
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


def build_subsets(cache: ArtifactCache, cfg: Config, arts: dict[str, DatasetArtifacts],
                  fresh: bool, run: Callable[[Callable, list[tuple]], list] | None = None,
                  plan: TrialPlan | None = None) -> dict[tuple[str, str, float, int], str]:
    """Subset keys of every trial of ``plan`` (default: the config's),
    ``(dataset, method, ratio, seed) -> key``: one scoring job per (seed, dataset, method),
    then the full-data baselines.

    ``run(fn, calls)`` runs ``fn(*args)`` for each of ``calls`` and returns the results in
    order (the pipeline passes Ray tasks with a worker's resources, so k-means gets the
    GPU when there is one); the default runs them here, one after another.
    """
    plan = plan or TrialPlan.from_config(cfg)
    calls = [(cache.root, j.method, j.seed, arts[j.dataset], list(j.ratios), fresh)
             for j in plan.jobs]
    say("score+select: %d (dataset, method, seed) job(s)", len(calls))
    results = (run or _run_here)(score_and_select, calls)
    out: dict[tuple[str, str, float, int], str] = {}
    for job, by_ratio in zip(plan.jobs, results):
        for ratio, key in by_ratio.items():
            out[(job.dataset, job.method.label, ratio, job.seed)] = key
    for t in plan.baselines():
        out[(t.dataset, FULL, 0.0, t.seed)] = ensure_subset(
            cache, arts[t.dataset], FULL, 0.0, t.seed, None, None, fresh)
    return out


def _run_here(fn: Callable, calls: list[tuple]) -> list:
    return [fn(*args) for args in calls]


def statistic_methods(cfg: Config, dataset: str) -> list[MethodConfig]:
    """The configured methods of ``dataset`` that score from proxy statistics (``needs_stats``)."""
    return [m for m in cfg.pruning.methods if m.build_pruner(dataset).needs_stats]


def score_reliability(cache: ArtifactCache, cfg: Config, arts: dict[str, DatasetArtifacts],
                      subsets: dict[tuple[str, str, float, int], str]) -> list[dict[str, Any]]:
    """Split-half and proxy-to-proxy reliability of every statistic method's scores (issue 24
    item 5).

    Split-half: each proxy records every statistic also from each half of its K draws, and
    :func:`ensure_scores` scores the method on each half with the same scoring code
    (score arrays ``scores_half_a``, ``scores_half_b``); their Spearman rho
    (``eval.analysis.reliability.split_half_rho``, images aligned by id) says how much of a
    proxy's ranking survives another set of noise draws. A row reports the mean over the
    experiment seeds (one proxy each); NaN with ``split_half_reason`` when no seed has both
    halves (a statistic of K < 2 draws: ``proxy.draws``, ``el2n_draws``, ``grand_draws``).

    Proxy-to-proxy: each experiment seed trains its own proxy, so two seeds' scores of one
    method are two independent measurements of the same per-image score. With S seeds every
    one of the S (S - 1) / 2 pairs is measured; a row reports their mean, min and max.

    The scores are read from the score artifacts the subsets name (manifest ``score``), so
    this needs no recomputation.

    Args:
        cache: the artifact cache.
        cfg: the run's config (``pruning.methods``, ``experiment.seeds``).
        arts: dataset name -> its artifacts.
        subsets: ``build_subsets``' ``(dataset, method label, ratio, seed) -> subset key``.

    Returns:
        One dict per (dataset, statistic method): ``dataset, method, split_half_rho`` (mean
        over seeds), ``split_half_seeds`` (seeds measured), ``split_half_reason`` ("" when
        measured), ``proxy_to_proxy_rho`` (mean over seed pairs; NaN with fewer than two
        seeds), ``proxy_to_proxy_min``, ``proxy_to_proxy_max``, ``seed_pairs``, ``seeds``.
        Feed a dataset's rows to :func:`reliability_frame` for
        ``eval.analysis.reliability_table``.
    """
    # lazy: eval.analysis (pandas, scipy) costs ~1.8 s; score_and_select's Ray tasks load this module
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
            halves, reason = _split_half(cache, {s: keys[s] for s in seeds}, scores, split_half_rho)
            rows.append({"dataset": ds, "method": method.label,
                         "split_half_rho": float(np.mean(halves)) if halves else float("nan"),
                         "split_half_seeds": len(halves), "split_half_reason": reason,
                         "proxy_to_proxy_rho": float(np.mean(rhos)) if rhos else float("nan"),
                         "proxy_to_proxy_min": float(min(rhos)) if rhos else float("nan"),
                         "proxy_to_proxy_max": float(max(rhos)) if rhos else float("nan"),
                         "seed_pairs": len(rhos), "seeds": ",".join(map(str, seeds))})
    return rows


def _split_half(cache: ArtifactCache, keys: dict[int, str], scores: dict[int, dict],
                rho: Callable) -> tuple[list[float], str]:
    """(finite split-half rhos, one per seed whose score artifact has both halves; "" or why
    there is none)."""
    found, reasons = [], []
    for seed, arrays in scores.items():
        if all(name in arrays for name in HALF_SCORES.values()):
            half_a = {"ids": arrays["ids"], "scores": arrays[HALF_SCORES["a"]]}
            half_b = {"ids": arrays["ids"], "scores": arrays[HALF_SCORES["b"]]}
            found.append(_aligned_rho(half_a, half_b, rho))
        elif cache.has(keys[seed], "json"):
            reasons.append(cache.load_json(keys[seed]).get("split_half")
                           or "the scores have no halves (scored before split halves)")
    if not scores:
        return [], "no scores"
    finite = [r for r in found if np.isfinite(r)]
    if finite:
        return finite, ""
    if found:
        return [], "the half scores are constant or cover fewer than 3 images"
    return [], "; ".join(dict.fromkeys(reasons)) or "the scores have no halves"


def _aligned_rho(a: dict[str, np.ndarray], b: dict[str, np.ndarray], rho: Callable) -> float:
    """rho of two score artifacts (``ids``, ``scores``) over the ids both scored."""
    common, ia, ib = np.intersect1d(a["ids"], b["ids"], return_indices=True)
    del common
    return float(rho(a["scores"][ia], b["scores"][ib]))


def reliability_frame(rows: list[dict[str, Any]], dataset: str | None = None) -> Any:
    """:func:`score_reliability` rows of one dataset as ``eval.analysis.reliability_table``
    (columns ``method, split_half_rho, proxy_to_proxy_rho, flag``; ``dataset`` None: the
    only dataset of the rows)."""
    # lazy: eval.analysis (pandas, scipy) costs ~1.8 s; score_and_select's Ray tasks load this module
    from eval.analysis.reliability import reliability_table

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    if dataset is None:
        if len(datasets) > 1:
            raise ValueError(f"rows of several datasets {datasets}: name one")
        dataset = datasets[0] if datasets else ""
    mine = [r for r in rows if r["dataset"] == dataset]
    return reliability_table({r["method"]: r["split_half_rho"] for r in mine},
                             {r["method"]: r["proxy_to_proxy_rho"] for r in mine})


def reliability_section(cache: ArtifactCache, cfg: Config, arts: dict[str, DatasetArtifacts],
                        subsets: dict[tuple[str, str, float, int], str],
                        rows: list[dict[str, Any]] | None = None) -> str:
    """Markdown of every dataset's :func:`score_reliability` table ("" when no method uses
    proxy statistics); a method with a rho < 0.5 (split-half or across proxies) is flagged,
    and a split-half rho that could not be measured is followed by the reason. The report
    appends it to ``analysis.md`` (logged to the MLflow parent run). ``rows``: the
    :func:`score_reliability` rows when already computed."""
    # lazy: eval.analysis (pandas, scipy) costs ~1.8 s; score_and_select's Ray tasks load this module
    from eval.analysis.reliability import reliability_markdown

    rows = score_reliability(cache, cfg, arts, subsets) if rows is None else rows
    if not rows:
        return ""
    parts = ["\n## Score reliability\n",
             "Split-half rho: Spearman's rho between a method's scores from the two halves of "
             "one proxy's noise draws (mean over experiment seeds). Proxy-to-proxy rho: "
             "between the scores of two proxies (one per experiment seed, mean over seed "
             "pairs).\n"]
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        parts += [f"\n### {ds}\n", reliability_markdown(reliability_frame(rows, ds))]
        parts += [f"Split-half rho of {r['method']} not measured: {r['split_half_reason']}.\n"
                  for r in rows if r["dataset"] == ds and r.get("split_half_reason")]
    return "\n".join(parts) + "\n"


def reliability_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """MLflow metrics of :func:`score_reliability` rows, logged on the sweep's parent run:
    ``reliability/<dataset>/<method>/split_half_rho`` and ``.../proxy_to_proxy_rho``; a rho
    that was not measured (NaN) is left out rather than logged as NaN."""
    out = {}
    for r in rows:
        for name in ("split_half_rho", "proxy_to_proxy_rho"):
            value = float(r.get(name, float("nan")))
            if np.isfinite(value):
                out[f"reliability/{r['dataset']}/{r['method']}/{name}"] = value
    return out
