"""Sweep stage: the trial specs of the plan, and the missing trials run by the executor.

Every trial of the :class:`~orchestrator.config.plan.TrialPlan` gets a
:class:`~orchestrator.training.records.TrialSpec` (cache keys, never arrays) and writes a
:class:`~orchestrator.training.records.TrialResult` (cached under the trial key). Where the
trials run is the executor's business (``orchestrator.runtime.executor``: a Ray Tune grid,
or this process); this stage imports no Ray.

Resume: a trial is done when its result record is in the cache; only missing trials are
launched. Each trial has a fixed run folder (``<ray_storage>/trials/<run name>``), so a
trial cut mid-way continues from its last checkpoint.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from typing import Any, Callable

from eval.memorization import train_nn_distances
from models.weights import weights_fingerprint
from orchestrator.config.plan import TrialPlan
from orchestrator.config.schema import Config, Trial
from orchestrator.progress import say
from orchestrator.runtime.executor import Executor, TrialJobs
from orchestrator.stages.score import DatasetArtifacts
from orchestrator.storage.cache import ArtifactCache
from orchestrator.storage.fsutil import join, remove_dir
from orchestrator.storage.tables import Table
from orchestrator.tracking.live import LiveTrialRuns
from orchestrator.training.evaluate import training_centroids
from orchestrator.training.records import TrialInputs, TrialResult, TrialSpec

log = logging.getLogger(__name__)
TRIAL_VERSION = 3   # 3: mem_copy_rate, cov_pred_share / agreement, subset_share, classifier
                    # accuracy; evaluation centres seeded by CENTROID_SEED (2: held-out reference)
TRIALS_DIR = "trials"
CENTROIDS_VERSION = 2   # 2: seeded by evaluate.CENTROID_SEED, not 0 (an experiment seed)
TRAIN_NN_VERSION = 1


def eval_inputs(cfg: Config, art: DatasetArtifacts) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Per evaluation space: feature keys, trained weight-file keys, local weight files."""
    spaces = cfg.eval.embedders
    features = {name: art.embeddings[name] for name in spaces}
    trained = {name: art.trained[name]["weights"] for name in spaces if name in art.trained}
    files = {name: cfg.embed.weights[name] for name in spaces if name in cfg.embed.weights}
    return features, trained, files


def ensure_centroids(cache: ArtifactCache, cfg: Config, art: DatasetArtifacts,
                     fresh: bool = False, run: Callable[[Callable, list[tuple]], list] | None = None
                     ) -> dict[str, str]:
    """Per evaluation space, the cache key of the full training set's k-means centres
    (``eval.centroids_k``; {} when not measured), computed here once per dataset instead
    of in every trial (2 s a trial in EfficientNet-Lite0's 1280 dimensions); ``fresh``
    recomputes them. ``run(fn, calls)`` runs the missing ones (the pipeline: Ray tasks,
    which read the features; the default: here, in turn)."""
    k = int(cfg.eval.centroids_k)
    if not k or "memorization" not in cfg.eval.metrics:
        return {}
    keys, calls = {}, []
    for name in cfg.eval.embedders:
        key = keys[name] = cache.key("centroids", CENTROIDS_VERSION,
                                     features=art.embeddings[name], k=k)
        if fresh or not cache.has(key, "arrays"):
            calls.append((cache.root, art.embeddings[name], key, k))
    if calls:
        (run or (lambda fn, cs: [fn(*c) for c in cs]))(compute_centroids, calls)
    return keys


def ensure_train_nn(cache: ArtifactCache, cfg: Config, art: DatasetArtifacts,
                    fresh: bool = False, run: Callable[[Callable, list[tuple]], list] | None = None
                    ) -> dict[str, str]:
    """Per evaluation space, the cache key of the full training set's leave-one-out
    nearest-neighbour distances (``eval.memorization.train_nn_distances``: the copy rate's
    threshold; {} without ``memorization``), computed once per dataset instead of in every
    trial (quadratic: 0.9 s at 3000 x 1280, 6 s at 12000 on 2 cores); ``fresh`` recomputes
    them, ``run`` as :func:`ensure_centroids`."""
    if "memorization" not in cfg.eval.metrics:
        return {}
    keys, calls = {}, []
    for name in cfg.eval.embedders:
        key = keys[name] = cache.key("trainnn", TRAIN_NN_VERSION, features=art.embeddings[name])
        if fresh or not cache.has(key, "arrays"):
            calls.append((cache.root, art.embeddings[name], key))
    if calls:
        (run or (lambda fn, cs: [fn(*c) for c in cs]))(compute_train_nn, calls)
    return keys


def compute_train_nn(cache_root: str, features_key: str, key: str) -> str:
    """Store ``train_nn_distances`` of the features table ``features_key`` under ``key``."""
    cache = ArtifactCache(cache_root)
    feats = Table(cache, features_key).column("features")
    cache.save_arrays(key, train_nn=train_nn_distances(feats))
    return key


def compute_centroids(cache_root: str, features_key: str, key: str, k: int) -> str:
    """Store :func:`training_centroids` of the features table ``features_key`` under ``key``."""
    cache = ArtifactCache(cache_root)
    feats = Table(cache, features_key).column("features")
    cache.save_arrays(key, centroids=training_centroids(feats, k))
    return key


def trial_key(cache: ArtifactCache, cfg: Config, trial: Trial, art: DatasetArtifacts, subset_key: str) -> str:
    """Everything a trial's result depends on: inputs' keys and the training/eval config."""
    ds = cfg.dataset(trial.dataset)
    features, trained, files = eval_inputs(cfg, art)
    return cache.key("trial", TRIAL_VERSION, subset=subset_key, latents=art.latents,
                     vqvae=art.vqvae, features=features, space_weights=trained,
                     reference=dict(sorted(art.reference.items())),
                     conditional=ds.conditional, seed=trial.seed, model=asdict(cfg.model),
                     train=asdict(cfg.train), sample=asdict(cfg.sample), eval=asdict(cfg.eval),
                     eval_weights={n: weights_fingerprint(n, f) for n, f in files.items()},
                     world_size=cfg.resources.num_workers)  # DDP ranks seed seed*world+rank


def space_params(art: DatasetArtifacts) -> dict[str, Any]:
    """MLflow params of a dataset's trained spaces (the classifier's test accuracy)."""
    out: dict[str, Any] = {}
    for name, info in art.trained.items():
        out[f"{name}_test_accuracy"] = round(float(info["test_accuracy"]), 4)
        out[f"{name}_test_images"] = int(info["n_test"])
    return out


def run_name(trial: Trial, key: str) -> str:
    """The fixed Ray Train run name of a trial (its checkpoints live under it)."""
    return f"{trial.name}-{key.split('/')[1][:10]}"


def build_specs(cache: ArtifactCache, cfg: Config, arts: dict[str, DatasetArtifacts],
                subsets: dict[tuple, str], fresh: bool = False,
                run: Callable[[Callable, list[tuple]], list] | None = None,
                plan: TrialPlan | None = None) -> list[TrialSpec]:
    """One :class:`TrialSpec` per trial of ``plan`` (default: the config's), in its order
    (``fresh``: recompute the per-dataset inputs built here, the k-means centres, run by
    ``run``)."""
    specs = []
    plan = plan or TrialPlan.from_config(cfg)
    centroids = {name: ensure_centroids(cache, cfg, art, fresh, run)
                 for name, art in arts.items()}
    train_nn = {name: ensure_train_nn(cache, cfg, art, fresh, run) for name, art in arts.items()}
    for trial in plan:
        art = arts[trial.dataset]
        ds = cfg.dataset(trial.dataset)
        sub_key = subsets[(trial.dataset, trial.method, float(trial.ratio), trial.seed)]
        key = trial_key(cache, cfg, trial, art, sub_key)
        features, trained, files = eval_inputs(cfg, art)
        manifest = cache.load_json(sub_key)
        specs.append(TrialSpec(
            key=key, cache_root=cache.root, run_name=run_name(trial, key), trial=trial,
            params={"n_train": manifest["n_train"], "subset_hash": manifest["subset_hash"],
                    "n_total": manifest["n_total"], "model": cfg.model.preset,
                    "train_steps": cfg.train.steps, "trial_key": key,
                    "eval_spaces": ",".join(cfg.eval.embedders), "eval_primary": cfg.eval.primary,
                    "reference_origin": art.reference_origin,
                    "reference_size": art.reference_size, **space_params(art)},
            inputs=TrialInputs(latents=art.latents, subset=sub_key, vqvae=art.vqvae,
                               features=features, weights=trained,
                               reference=dict(art.reference),
                               centroids=centroids[trial.dataset],
                               train_nn=train_nn[trial.dataset]),
            conditional=ds.conditional, num_classes=art.num_classes, model=cfg.model,
            train=cfg.train, sample=cfg.sample, eval=cfg.eval, eval_weights=files))
    return specs


def spec_key(spec: TrialSpec) -> str:
    """Cache key of a trial's spec (what the Tune trial loads)."""
    return ArtifactCache.key("trialspec", TRIAL_VERSION, trial=spec.key)


def is_done(cache: ArtifactCache, spec: TrialSpec) -> bool:
    """Whether the trial's result is in the cache."""
    return cache.has(spec.key, "json")


def clear_trial_runs(cfg: Config, specs: list[TrialSpec]) -> None:
    """Delete the trials' Ray Train run folders (checkpoints) for ``--fresh``."""
    for spec in specs:
        remove_dir(join(cfg.storage.ray_storage, TRIALS_DIR, spec.run_name))


def run_sweep(cache: ArtifactCache, cfg: Config, specs: list[TrialSpec], executor: Executor,
              fresh: bool, live: LiveTrialRuns | None = None) -> dict[str, str]:
    """Train every trial whose result is missing; returns ``{trial key: error}`` of failures.

    ``live``: the live MLflow runs (:mod:`orchestrator.tracking.live`), fed by the executor
    as its trials start, report and end.
    """
    if fresh:
        clear_trial_runs(cfg, specs)
        for spec in specs:
            cache.invalidate(spec.key, "json")
    pending = [s for s in specs if not is_done(cache, s)]
    done = len(specs) - len(pending)
    say("sweep: %d trial(s), %d already done, %d to run (%s executor)", len(specs), done,
        len(pending), executor.name)
    if not pending:
        return {}
    for s in pending:
        cache.save_json(spec_key(s), s.to_json())
    failed = executor.run_trials(TrialJobs(
        jobs=tuple((s.run_name, spec_key(s)) for s in pending), cache_root=cache.root,
        storage=join(cfg.storage.ray_storage, TRIALS_DIR),
        experiment=(cfg.storage.ray_storage, cfg.experiment.name),
        max_failures=cfg.resources.max_failures, live=live))
    return {s.key: failed.get(spec_key(s), "no result written")
            for s in pending if not is_done(cache, s)}


def load_results(cache: ArtifactCache, specs: list[TrialSpec]) -> list[TrialResult]:
    """Results of the finished trials, in grid order."""
    return [TrialResult.from_json(cache.load_json(s.key)) for s in specs if is_done(cache, s)]


def fetch_files(cache: ArtifactCache, result: TrialResult, out_dir: str) -> dict[str, str]:
    """Local copies of a result's files (for MLflow): ``{"grid": png path, "manifest": json path}``."""
    os.makedirs(out_dir, exist_ok=True)
    files = {}
    if result.files.grid and cache.has(result.files.grid, "bytes"):
        files["grid"] = os.path.join(out_dir, "samples.png")
        with open(files["grid"], "wb") as f:
            f.write(cache.load_bytes(result.files.grid))
    if result.files.manifest and cache.has(result.files.manifest, "json"):
        files["manifest"] = os.path.join(out_dir, "subset_manifest.json")
        with open(files["manifest"], "wb") as f:
            f.write(cache.get(result.files.manifest, "json"))
    return files
