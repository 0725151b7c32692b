"""Sweep stage: a Ray Tune grid over dataset x method x ratio x seed (+ baselines).

Each Tune trial is a function trainable. With ``resources.num_workers == 1`` it runs
the trial itself (:func:`solo_trial`: :func:`orchestrator.training.trial.run_trial`
on a ``runtime.tune.TuneRuntime``), asking for the trial's CPUs (GPU) directly;
no Ray Train run per trial (issue #13: that machinery was ~31% of a quickstart trial's
slot). With more workers it takes a sliver of CPU and builds a ``TorchTrainer`` (Ray
Train V2: ``Tuner(trainer)`` is gone) running :func:`trial_worker` (``run_trial`` on a
``TrainRuntime``), with ``TuneReportCallback`` so Tune's status table shows the
workers' loss and final metrics. A trial is given a
:class:`~orchestrator.training.records.TrialSpec` (cache keys, never arrays) and
returns a :class:`~orchestrator.training.records.TrialResult` (cached under the trial key).

Resume: a trial is done when its result record is in the cache; only missing
trials are launched. Each trial has a fixed run folder (``<ray_storage>/trials/<run
name>``, the TorchTrainer's run or the solo trial's checkpoints), so a trial cut
mid-way continues from its last checkpoint; within a sweep, Tune's
``FailureConfig(max_failures)`` restarts a failed solo trial from its Tune checkpoint.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from typing import Any, Callable, Sequence

from models.weights import weights_fingerprint
from orchestrator.config.plan import TrialPlan
from orchestrator.config.schema import Config, Trial
from orchestrator.progress import say
from orchestrator.runtime.quiet import TUNE_REPORT_S
from orchestrator.runtime.resources import ResourcePlan, describe
from orchestrator.stages.score import DatasetArtifacts
from orchestrator.storage.cache import ArtifactCache
from orchestrator.storage.fsutil import join
from orchestrator.storage.tables import Table
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
    from eval.memorization import train_nn_distances

    cache = ArtifactCache(cache_root)
    feats = Table(cache, features_key).column("features")
    cache.save_arrays(key, train_nn=train_nn_distances(feats))
    return key


def compute_centroids(cache_root: str, features_key: str, key: str, k: int) -> str:
    """Store :func:`training_centroids` of the features table ``features_key`` under ``key``."""
    from orchestrator.training.evaluate import training_centroids

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


def trial_worker(config: dict) -> None:
    """Ray Train loop of one trial: :func:`orchestrator.training.trial.run_trial`."""
    import torch

    from orchestrator.runtime.train import TrainRuntime
    from orchestrator.training.trial import run_trial

    torch.set_num_threads(int(config.get("threads", 1)))
    run_trial(TrialSpec.from_json(config["spec"]), TrainRuntime())


def solo_trial(config: dict) -> None:
    """Tune function trainable of a single-worker trial: the loop runs right here.

    Checkpoints go to Tune (``tune.report``) and to the trial's fixed run folder; see
    :class:`orchestrator.runtime.tune.TuneRuntime`.
    """
    from orchestrator.runtime.train import torch_threads
    from orchestrator.runtime.tune import TuneRuntime
    from orchestrator.training.trial import run_trial

    spec = ArtifactCache(config["cache_root"]).load_json(config["trial"]["spec"])
    plan = ResourcePlan(**config["plan"])
    torch_threads(plan.torch_threads)
    run_trial(TrialSpec.from_json(spec), TuneRuntime(join(config["storage"], spec["run_name"])))
    say("trial %s: finished", spec["run_name"])


def trial_resources(plan: ResourcePlan) -> dict[str, float]:
    """What a Tune trial asks for: the worker's share itself when it runs the loop
    (one worker), else a sliver (its TorchTrainer's workers ask for theirs)."""
    if plan.num_workers == 1:
        res = {"CPU": round(plan.worker_cpus + plan.trial_cpus, 2)}
        if plan.worker_gpus:
            res["GPU"] = plan.worker_gpus
        return res
    return {"CPU": plan.trial_cpus}


def tune_trial(config: dict) -> None:
    """Tune function trainable: one TorchTrainer; its metrics reach Tune via the callback.

    Returns nothing (returning fit()'s Result breaks Tune's bookkeeping).
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    from orchestrator.runtime.train import fit_torch

    spec = ArtifactCache(config["cache_root"]).load_json(config["trial"]["spec"])
    plan = ResourcePlan(**config["plan"])
    fit_torch(trial_worker, {"spec": spec}, plan, spec["run_name"], config["storage"],
              config["max_failures"], callbacks=[TuneReportCallback()])
    say("trial %s: training run finished", spec["run_name"])


def clear_trial_runs(cfg: Config, specs: list[TrialSpec]) -> None:
    """Delete the trials' Ray Train run folders (checkpoints) for ``--fresh``."""
    from orchestrator.storage.fsutil import remove_dir

    for spec in specs:
        remove_dir(join(cfg.storage.ray_storage, TRIALS_DIR, spec.run_name))


def run_sweep(cache: ArtifactCache, cfg: Config, specs: list[TrialSpec], plan: ResourcePlan,
              fresh: bool, callbacks: Sequence[Any] = ()) -> dict[str, str]:
    """Train every trial whose result is missing; returns ``{trial key: error}`` of failures.

    ``callbacks``: more Ray Tune callbacks (the live MLflow logger, orchestrator.tracking).
    """
    from ray import tune

    from orchestrator.runtime.workarounds import release_callback

    if fresh:
        clear_trial_runs(cfg, specs)
        for spec in specs:
            cache.invalidate(spec.key, "json")
    pending = [s for s in specs if not is_done(cache, s)]
    done = len(specs) - len(pending)
    say("sweep: %d trial(s), %d already done, %d to run; %s", len(specs), done, len(pending),
        describe(plan))
    if not pending:
        return {}
    storage = join(cfg.storage.ray_storage, TRIALS_DIR)
    # Trials get the run name and the cache key of their spec (Tune prints configs).
    for s in pending:
        cache.save_json(spec_key(s), s.to_json())
    param_space = {"trial": tune.grid_search([{"name": s.run_name, "spec": spec_key(s)}
                                              for s in pending]),
                   "cache_root": cache.root, "plan": asdict(plan), "storage": storage,
                   "max_failures": cfg.resources.max_failures}
    solo = plan.num_workers == 1
    trainable = tune.with_resources(solo_trial if solo else tune_trial, trial_resources(plan))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tuner = tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=plan.max_concurrent_trials,
                                    trial_name_creator=lambda t: t.config["trial"]["name"],
                                    trial_dirname_creator=lambda t: t.config["trial"]["name"]),
        run_config=tune.RunConfig(name=f"sweep-{cfg.experiment.name}-{stamp}", storage_path=cfg.storage.ray_storage,
                                  verbose=1, log_to_file=False,
                                  # A solo trial restarts from its Tune checkpoint; a
                                  # TorchTrainer trial restarts within its own run, but when its
                                  # node is lost its Tune actor and Train controller die with it
                                  # (seen on a multi-node cluster): Tune restarts the trial and
                                  # the TorchTrainer resumes from the run's last checkpoint.
                                  failure_config=tune.FailureConfig(
                                      max_failures=cfg.resources.max_failures),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                  callbacks=[*([] if solo else [release_callback()]),
                                             *callbacks],
                                  progress_reporter=tune.CLIReporter(
                                      metric_columns=["step", "loss"], parameter_columns=[],
                                      max_report_frequency=TUNE_REPORT_S)),
    )
    outcomes = tuner.fit()
    errors: dict[str, str] = {}
    for res in outcomes:
        spec = TrialSpec.from_json(cache.load_json(res.config["trial"]["spec"])) if res.config else None
        if spec is None:
            continue
        if not is_done(cache, spec):
            errors[spec.key] = (str(res.error).strip().splitlines() or ["no result written"])[-1] \
                if res.error else "no result written"
    return errors


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
