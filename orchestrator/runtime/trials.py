"""The sweep's trials as a Ray Tune grid (:class:`~orchestrator.runtime.executor.RayExecutor`).

Each Tune trial is a function trainable. With ``resources.num_workers == 1`` it runs
the trial itself (:func:`solo_trial`: :func:`orchestrator.training.trial.run_trial`
on a ``runtime.tune.TuneRuntime``), asking for the trial's CPUs (GPU) directly;
no Ray Train run per trial (issue #13: that machinery was ~31% of a quickstart trial's
slot). With more workers it takes a sliver of CPU and builds a ``TorchTrainer`` (Ray
Train V2: ``Tuner(trainer)`` is gone) running :func:`trial_worker` (``run_trial`` on a
``TrainRuntime``), with ``TuneReportCallback`` so Tune's status table shows the
workers' loss and final metrics.

Each trial has a fixed run folder (``<storage>/<run name>``: the TorchTrainer's run or the
solo trial's checkpoints), so a trial cut mid-way continues from its last checkpoint;
within a sweep, Tune's ``FailureConfig(max_failures)`` restarts a failed solo trial from
its Tune checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import torch
from ray import tune
from ray.tune import Callback   # this module is the Tune side of the Ray executor
from ray.tune.integration.ray_train import TuneReportCallback

from orchestrator.progress import say
from orchestrator.runtime.quiet import TUNE_REPORT_S
from orchestrator.runtime.resources import ResourcePlan
from orchestrator.runtime.train import TrainRuntime, fit_torch, torch_threads
from orchestrator.runtime.tune import TuneRuntime
from orchestrator.runtime.workarounds import release_callback
from orchestrator.storage.cache import ArtifactCache
from orchestrator.storage.fsutil import join
from orchestrator.tracking.live import LiveTrialRuns
from orchestrator.training.records import TrialSpec
from orchestrator.training.trial import run_trial


def trial_worker(config: dict) -> None:
    """Ray Train loop of one trial: :func:`orchestrator.training.trial.run_trial`."""
    torch.set_num_threads(int(config.get("threads", 1)))
    run_trial(TrialSpec.from_json(config["spec"]), TrainRuntime())


def solo_trial(config: dict) -> None:
    """Tune function trainable of a single-worker trial: the loop runs right here.

    Checkpoints go to Tune (``tune.report``) and to the trial's fixed run folder; see
    :class:`orchestrator.runtime.tune.TuneRuntime`.
    """
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
    spec = ArtifactCache(config["cache_root"]).load_json(config["trial"]["spec"])
    plan = ResourcePlan(**config["plan"])
    fit_torch(trial_worker, {"spec": spec}, plan, spec["run_name"], config["storage"],
              config["max_failures"], callbacks=[TuneReportCallback()])
    say("trial %s: training run finished", spec["run_name"])


class TuneLiveCallback(Callback):
    """Ray Tune's trial events fed to :class:`~orchestrator.tracking.live.LiveTrialRuns`
    (the live MLflow runs): start, restore, each result, complete, error. The token of a
    trial's attempt is Tune's trial id."""

    def __init__(self, runs: LiveTrialRuns) -> None:
        self.runs = runs

    @staticmethod
    def _name(trial: Any) -> str | None:
        return (getattr(trial, "config", None) or {}).get("trial", {}).get("name")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.runs.start(self._name(trial), str(trial.trial_id))

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.on_trial_start(iteration, trials, trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        self.runs.result(self._name(trial), str(trial.trial_id), result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.runs.end(self._name(trial), str(trial.trial_id), "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.runs.end(self._name(trial), str(trial.trial_id), "FAILED")


def run_tune_grid(trials: Any, plan: ResourcePlan) -> dict[str, str]:
    """One Tune experiment over ``trials.jobs`` (a ``runtime.executor.TrialJobs``, not
    imported here: the executor imports the Ray executor, which imports this module);
    ``{spec key: error}`` of the trials that ended with an error (the last line of Tune's
    error)."""
    root, name = trials.experiment
    # Trials get the run name and the cache key of their spec (Tune prints configs).
    param_space = {"trial": tune.grid_search([{"name": n, "spec": k} for n, k in trials.jobs]),
                   "cache_root": trials.cache_root, "plan": asdict(plan),
                   "storage": trials.storage, "max_failures": trials.max_failures}
    solo = plan.num_workers == 1
    trainable = tune.with_resources(solo_trial if solo else tune_trial, trial_resources(plan))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tuner = tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=plan.max_concurrent_trials,
                                    # a solo trial's actor runs the next trial: no new
                                    # process, no imports again (smoke's 4 trials on
                                    # 2 CPUs: 44 s -> 15 s)
                                    reuse_actors=solo,
                                    trial_name_creator=lambda t: t.config["trial"]["name"],
                                    trial_dirname_creator=lambda t: t.config["trial"]["name"]),
        run_config=tune.RunConfig(name=f"sweep-{name}-{stamp}", storage_path=root,
                                  verbose=1, log_to_file=False,
                                  # A solo trial restarts from its Tune checkpoint; a
                                  # TorchTrainer trial restarts within its own run, but when its
                                  # node is lost its Tune actor and Train controller die with it
                                  # (seen on a multi-node cluster): Tune restarts the trial and
                                  # the TorchTrainer resumes from the run's last checkpoint.
                                  failure_config=tune.FailureConfig(max_failures=trials.max_failures),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                  callbacks=[*([] if solo else [release_callback()]),
                                             *([TuneLiveCallback(trials.live)]
                                               if trials.live else [])],
                                  progress_reporter=tune.CLIReporter(
                                      metric_columns=["step", "loss"], parameter_columns=[],
                                      max_report_frequency=TUNE_REPORT_S)),
    )
    errors: dict[str, str] = {}
    for res in tuner.fit():
        if res.config and res.error:
            errors[res.config["trial"]["spec"]] = (
                str(res.error).strip().splitlines() or ["no result written"])[-1]
    return errors
