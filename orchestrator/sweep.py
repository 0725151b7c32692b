"""Sweep stage: a Ray Tune grid over dataset x method x ratio x seed (+ baselines).

Each Tune trial is a function trainable with a sliver of CPU that builds a
``TorchTrainer`` (Ray Train V2: ``Tuner(trainer)`` is gone) running
:func:`orchestrator.train_loop.train_trial_worker`, with ``TuneReportCallback`` so
Tune's status table shows the workers' loss and final metrics. Trials receive
cache keys, never arrays.

Resume: a trial is done when its result record is in the cache; only missing
trials are launched. Each trial's TorchTrainer has a fixed name and storage path,
so a trial cut mid-way continues from its last checkpoint.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from typing import Any

from orchestrator.cache import ArtifactCache
from orchestrator.fsutil import join
from orchestrator.resources import ResourcePlan, describe
from orchestrator.score import DatasetArtifacts

log = logging.getLogger(__name__)
TRIAL_VERSION = 1
TRIALS_DIR = "trials"


def trial_key(cache: ArtifactCache, cfg: Any, trial: Any, art: DatasetArtifacts, subset_key: str) -> str:
    """Everything a trial's result depends on: inputs' keys and the training/eval config."""
    ds = cfg.dataset(trial.dataset)
    return cache.key("trial", TRIAL_VERSION, subset=subset_key, latents=art.latents,
                     vqvae=art.vqvae, features=art.embeddings[cfg.eval.embedder],
                     conditional=ds.conditional, seed=trial.seed, model=asdict(cfg.model),
                     train=asdict(cfg.train), sample=asdict(cfg.sample), eval=asdict(cfg.eval),
                     eval_weights=cfg.embed.weights.get(cfg.eval.embedder),
                     world_size=cfg.resources.num_workers)  # DDP ranks seed seed*world+rank


def run_name(trial: Any, key: str) -> str:
    """The fixed Ray Train run name of a trial (its checkpoints live under it)."""
    return f"{trial.name}-{key.split('/')[1][:10]}"


def build_specs(cache: ArtifactCache, cfg: Any, arts: dict[str, DatasetArtifacts],
                subsets: dict[tuple, str]) -> list[dict]:
    """One JSON-able spec per trial of the grid, in grid order."""
    specs = []
    for trial in cfg.trial_grid():
        art = arts[trial.dataset]
        ds = cfg.dataset(trial.dataset)
        sub_key = subsets[(trial.dataset, trial.method, float(trial.ratio), trial.seed)]
        key = trial_key(cache, cfg, trial, art, sub_key)
        manifest = cache.load_json(sub_key)
        specs.append({
            "key": key, "cache_root": cache.root, "run_name": run_name(trial, key),
            "trial": {"dataset": trial.dataset, "method": trial.method, "ratio": float(trial.ratio),
                      "seed": trial.seed, "name": trial.name},
            "params": {"n_train": manifest["n_train"], "subset_hash": manifest["subset_hash"],
                       "n_total": manifest["n_total"], "model": cfg.model.preset,
                       "train_steps": cfg.train.steps, "trial_key": key},
            "inputs": {"latents": art.latents, "subset": sub_key, "vqvae": art.vqvae,
                       "features": art.embeddings[cfg.eval.embedder]},
            "conditional": ds.conditional, "num_classes": art.num_classes,
            "model": asdict(cfg.model), "train": asdict(cfg.train), "sample": asdict(cfg.sample),
            "eval": asdict(cfg.eval), "eval_weights": cfg.embed.weights.get(cfg.eval.embedder),
        })
    return specs


def spec_key(spec: dict) -> str:
    """Cache key of a trial's spec (what the Tune trial loads)."""
    return ArtifactCache.key("trialspec", TRIAL_VERSION, trial=spec["key"])


def is_done(cache: ArtifactCache, spec: dict) -> bool:
    return cache.has(spec["key"], "json")


def run_trial(config: dict) -> None:
    """Tune function trainable: one TorchTrainer; its metrics reach Tune via the callback.

    Returns nothing (returning fit()'s Result breaks Tune's bookkeeping).
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    from orchestrator.ray_utils import fit_torch, say
    from orchestrator.resources import ResourcePlan
    from orchestrator.train_loop import train_trial_worker

    spec = ArtifactCache(config["cache_root"]).load_json(config["trial"]["spec"])
    plan = ResourcePlan(**config["plan"])
    fit_torch(train_trial_worker, spec, plan, spec["run_name"], config["storage"],
              config["max_failures"], callbacks=[TuneReportCallback()])
    say("trial %s: training run finished", spec["run_name"])


def _release_callback() -> Any:
    """A Tune callback removing a finished trial's worker placement group.

    The group id comes with the trial's reports (``pg_id``); see
    :func:`orchestrator.ray_utils.release_placement_group` for why.
    """
    from ray import tune

    from orchestrator.ray_utils import PG_KEY, release_placement_group

    class ReleasePlacementGroups(tune.Callback):
        # Tune's last result of a function trainable may lack the reported keys:
        # remember the id from every result.
        def __init__(self):
            self.pg_ids: dict[str, str] = {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get(PG_KEY):
                self.pg_ids[trial.trial_id] = result[PG_KEY]

        def on_trial_complete(self, iteration, trials, trial, **info):
            release_placement_group({PG_KEY: self.pg_ids.pop(trial.trial_id, None)})

        def on_trial_error(self, iteration, trials, trial, **info):
            release_placement_group({PG_KEY: self.pg_ids.pop(trial.trial_id, None)})

        # A trial restarted after its node was lost: the lost attempt's controller died
        # with it and its worker group's group stayed reserved on a surviving node,
        # which the restarted attempt then waited for (seen when a node was removed).
        def on_trial_recover(self, iteration, trials, trial, **info):
            release_placement_group({PG_KEY: self.pg_ids.pop(trial.trial_id, None)})

    return ReleasePlacementGroups()


def clear_trial_runs(cfg: Any, specs: list[dict]) -> None:
    """Delete the trials' Ray Train run folders (checkpoints) for ``--fresh``."""
    from orchestrator.fsutil import remove_dir

    for spec in specs:
        remove_dir(join(cfg.storage.ray_storage, TRIALS_DIR, spec["run_name"]))


def run_sweep(cache: ArtifactCache, cfg: Any, specs: list[dict], plan: ResourcePlan,
              fresh: bool) -> dict[str, str]:
    """Train every trial whose result is missing; returns ``{trial key: error}`` of failures."""
    from ray import tune

    if fresh:
        clear_trial_runs(cfg, specs)
        for spec in specs:
            cache.invalidate(spec["key"], "json")
    pending = [s for s in specs if not is_done(cache, s)]
    done = len(specs) - len(pending)
    print(f"sweep: {len(specs)} trial(s), {done} already done, {len(pending)} to run; {describe(plan)}",
          flush=True)
    if not pending:
        return {}
    storage = join(cfg.storage.ray_storage, TRIALS_DIR)
    # Trials get the run name and the cache key of their spec (Tune prints configs).
    for s in pending:
        cache.save_json(spec_key(s), s)
    param_space = {"trial": tune.grid_search([{"name": s["run_name"], "spec": spec_key(s)}
                                              for s in pending]),
                   "cache_root": cache.root, "plan": asdict(plan), "storage": storage,
                   "max_failures": cfg.resources.max_failures}
    trainable = tune.with_resources(run_trial, {"CPU": plan.trial_cpus})
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tuner = tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=plan.max_concurrent_trials,
                                    trial_name_creator=lambda t: t.config["trial"]["name"],
                                    trial_dirname_creator=lambda t: t.config["trial"]["name"]),
        run_config=tune.RunConfig(name=f"sweep-{cfg.experiment.name}-{stamp}", storage_path=cfg.storage.ray_storage,
                                  verbose=1, log_to_file=False, callbacks=[_release_callback()],
                                  # A trial whose node is lost (its function actor and Train
                                  # controller die with it) is restarted; its TorchTrainer
                                  # resumes from the run's last checkpoint.
                                  failure_config=tune.FailureConfig(
                                      max_failures=cfg.resources.max_failures),
                                  progress_reporter=tune.CLIReporter(
                                      metric_columns=["step", "loss"], parameter_columns=[],
                                      max_report_frequency=30)),
    )
    grid = tuner.fit()
    errors: dict[str, str] = {}
    for res in grid:
        spec = cache.load_json(res.config["trial"]["spec"]) if res.config else None
        if spec is None:
            continue
        if not is_done(cache, spec):
            errors[spec["key"]] = (str(res.error).strip().splitlines() or ["no result written"])[-1] \
                if res.error else "no result written"
    return errors


def load_results(cache: ArtifactCache, specs: list[dict]) -> list[dict]:
    """Result records of the finished trials, in grid order."""
    return [cache.load_json(s["key"]) for s in specs if is_done(cache, s)]


def fetch_files(cache: ArtifactCache, result: dict, out_dir: str) -> dict[str, str]:
    """Local copies of a result's artifacts (for MLflow): grid PNG, manifest JSON."""
    os.makedirs(out_dir, exist_ok=True)
    files = {}
    grid_key = result["files"].get("grid")
    if grid_key and cache.has(grid_key, "bytes"):
        files["grid"] = os.path.join(out_dir, "samples.png")
        with open(files["grid"], "wb") as f:
            f.write(cache.load_bytes(grid_key))
    man_key = result["files"].get("manifest")
    if man_key and cache.has(man_key, "json"):
        files["manifest"] = os.path.join(out_dir, "subset_manifest.json")
        with open(files["manifest"], "wb") as f:
            f.write(cache.get(man_key, "json"))
    return files
