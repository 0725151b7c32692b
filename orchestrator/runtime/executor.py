"""The executor: where the stages' work runs, on Ray or in this process.

A stage decides *what* runs (which trials are missing, which score jobs, what is cached);
an :class:`Executor` decides *where*. ``resources.executor`` picks one
(:func:`open_executor`); both write the same artifacts into the same cache:

- :class:`~orchestrator.runtime.ray_executor.RayExecutor` (``ray``, the default; its own
  module, which imports Ray): sources are Ray Data datasets, encode/embed passes are
  ``map_batches`` actor pools, tasks are Ray tasks with one worker's resources, training
  runs (the VQ-VAE of a large dataset, the proxy) are Ray Train runs, and the sweep is a
  Ray Tune grid (:mod:`orchestrator.runtime.trials`).
- :class:`LocalExecutor` (``local``): no Ray is imported. Sources are in memory
  (:mod:`orchestrator.data.local_rows`), a pass runs one actor here batch by batch, tasks
  and training runs are plain calls, and trials run one after another on a
  :class:`~orchestrator.training.run_folder.FolderRuntime` (checkpoints in the same run
  folders, so a rerun resumes). One worker: for tests, a laptop, or debugging a stage.

The threads each piece uses come from the same :class:`ResourcePlan` on both (the local
plan is sized on this machine's CPUs as Ray would size it), so a config gives the same
numbers on either executor (``tests/test_executor_pipeline.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

import torch

from orchestrator.config.schema import ResourcesConfig
from orchestrator.data.base import SourceData
from orchestrator.data.local_rows import local_source
from orchestrator.progress import say
from orchestrator.runtime.resources import ResourcePlan, plan_resources
from orchestrator.storage.cache import ArtifactCache
from orchestrator.storage.fsutil import join
from orchestrator.tracking.live import LiveTrialRuns
from orchestrator.training.records import TrialSpec
from orchestrator.training.run_folder import FolderRuntime
from orchestrator.training.trial import run_trial

EXECUTORS = ("ray", "local")


@dataclass(frozen=True)
class TrialJobs:
    """The trials a sweep still has to run, and where they keep their state.

    Attributes:
        jobs: ``(run name, spec cache key)`` per trial, in grid order.
        cache_root: the artifact cache the specs (and results) live in.
        storage: the folder of the trials' run folders (``<ray_storage>/trials``).
        experiment: the Tune experiment's storage root and name prefix (``ray_storage``, name).
        max_failures: restarts of a failed trial.
        live: the live MLflow runs (:mod:`orchestrator.tracking.live`), None for none.
    """

    jobs: tuple[tuple[str, str], ...]
    cache_root: str
    storage: str
    experiment: tuple[str, str]
    max_failures: int
    live: LiveTrialRuns | None = None


@dataclass(frozen=True)
class LocalColumns:
    """:meth:`LocalExecutor.gather`'s columns, handed to a task as they are."""

    arrays: tuple[Any, ...]


def join_columns(gathered: Any) -> list[Any]:
    """In a task: the columns behind an executor's :meth:`Executor.gather`, one array each."""
    if isinstance(gathered, LocalColumns):
        return list(gathered.arrays)
    # lazy: runtime.cluster imports Ray, never imported on the local executor (test_local_pipeline)
    from orchestrator.runtime.cluster import join_refs

    return join_refs(gathered)


class Executor(Protocol):
    """Runs the stages' passes, tasks, training runs and trials (see the module docstring).

    Attributes:
        name: ``ray`` or ``local``.
        plan: the resource requests and thread counts of every piece.
        in_memory: the sources' rows are in this process (every dataset is "small").
    """

    name: str
    plan: ResourcePlan
    in_memory: bool

    def source(self, ds: Any, role: str = "train", cap: int | None = None) -> SourceData:
        """``ds``'s rows of ``role`` (``train``, ``reference`` capped at ``cap``)."""

    def good_rows(self, dataset: Any) -> Any:
        """The rows of a source's dataset that decoded (``error == ""``)."""

    def map_rows(self, dataset: Any, actor_cls: type, ctor_kwargs: dict,
                 batch_size: int) -> list[dict]:
        """``actor_cls(**ctor_kwargs)`` over the rows in batches; the JSON ``report`` of every
        batch's result row (the encode/embed actors write table parts and report them)."""

    def gather(self, dataset: Any, columns: list[str]) -> Any:
        """Columns of ``dataset`` for a task, which joins them with :func:`join_columns`."""

    def run_tasks(self, fn: Callable[..., Any], calls: list[tuple], name: str) -> list[Any]:
        """``fn(*args)`` for each ``args`` in ``calls``; the results in order."""

    def call_as_worker(self, fn: Callable[..., Any], name: str, *args: Any) -> Any:
        """``fn(*args)`` with one training worker's resources; its result."""

    def fit(self, train_fn: Callable[..., None], config: dict, name: str,
            storage: str) -> None:
        """A resumable training run of ``train_fn(config, runtime)`` with its checkpoints
        under ``<storage>/<name>`` (``config`` gains ``threads`` and ``use_gpu``)."""

    def fit_on_shards(self, fn: Callable[..., Any], config: dict, name: str, storage: str,
                      dataset: Any, *args: Any) -> Any:
        """A DDP run over the dataset's shards (the VQ-VAE of a large dataset); its result."""

    def run_trials(self, trials: TrialJobs) -> dict[str, str]:
        """Run every trial of ``trials``; ``{spec cache key: error}`` of those that raised
        (a trial that finishes writes its result into the cache itself)."""


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """This process's torch intra-op threads set to ``n`` for the block, then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def local_plan(res_cfg: ResourcesConfig) -> ResourcePlan:
    """The plan Ray would make for this machine alone (its CPUs, its GPUs when asked)."""
    cpus = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count() or 1)
    gpus = 0.0
    if res_cfg.use_gpu:
        gpus = float(torch.cuda.device_count())
    return plan_resources(res_cfg, {"CPU": cpus, "GPU": gpus})


class LocalExecutor:
    """Everything in this process, one call after another (no Ray)."""

    name = "local"
    in_memory = True

    def __init__(self, plan: ResourcePlan | None = None, device: str | None = None,
                 max_failures: int = 1) -> None:
        self.plan = plan or local_plan(ResourcesConfig())
        self.device = device or ("cuda" if self.plan.worker_gpus else "cpu")
        self.max_failures = max_failures

    def source(self, ds: Any, role: str = "train", cap: int | None = None) -> SourceData:
        return local_source(ds, role, cap)

    def good_rows(self, dataset: Any) -> Any:
        return dataset.good()

    def map_rows(self, dataset: Any, actor_cls: type, ctor_kwargs: dict,
                 batch_size: int) -> list[dict]:
        with torch_threads(ctor_kwargs.get("threads", self.plan.actor_threads)):
            actor = actor_cls(**ctor_kwargs)
            return [json.loads(str(r)) for batch in dataset.iter_batches(batch_size)
                    for r in actor(batch)["report"]]

    def gather(self, dataset: Any, columns: list[str]) -> Any:
        return LocalColumns(tuple(dataset.take(columns)))

    def run_tasks(self, fn: Callable[..., Any], calls: list[tuple], name: str) -> list[Any]:
        # as a Ray task's process: threads for the worker's CPUs (a task may set its own)
        with torch_threads(self.plan.torch_threads):
            return [fn(*args) for args in calls]

    def call_as_worker(self, fn: Callable[..., Any], name: str, *args: Any) -> Any:
        with torch_threads(self.plan.solo_threads):
            return fn(*args)

    def fit(self, train_fn: Callable[..., None], config: dict, name: str,
            storage: str) -> None:
        with torch_threads(self.plan.solo_threads):
            train_fn({**config, "threads": self.plan.solo_threads,
                      "use_gpu": self.device != "cpu"},
                     FolderRuntime(join(storage, name), self.device))

    def fit_on_shards(self, fn: Callable[..., Any], config: dict, name: str, storage: str,
                      dataset: Any, *args: Any) -> Any:
        """Not here: every dataset is in memory and one worker trains it (``train_vqvae``
        takes the in-memory path; the config check refuses ``num_workers > 1``)."""
        raise NotImplementedError("the local executor trains from memory with one worker "
                                  "(resources.executor: ray for DDP over shards)")

    def run_trials(self, trials: TrialJobs) -> dict[str, str]:
        cache, errors, live = ArtifactCache(trials.cache_root), {}, trials.live
        for run_name, spec_key in trials.jobs:
            spec = TrialSpec.from_json(cache.load_json(spec_key))
            for attempt in range(trials.max_failures + 1):   # a restart resumes from its folder
                token = f"{run_name}#{attempt}"
                runtime = FolderRuntime(join(trials.storage, run_name), self.device)
                if live is not None:
                    live.start(run_name, token)
                    runtime.on_report = lambda m, t=token, n=run_name: live.result(n, t, m)
                try:
                    with torch_threads(self.plan.torch_threads):
                        run_trial(spec, runtime)
                except Exception as err:   # one trial's failure does not stop the sweep
                    errors[spec_key] = f"{type(err).__name__}: {err}"
                    say("trial %s: failed (attempt %d): %s", run_name, attempt + 1, err)
                    if live is not None:
                        live.end(run_name, token, "FAILED")
                else:
                    errors.pop(spec_key, None)
                    say("trial %s: finished", run_name)
                    if live is not None:
                        live.end(run_name, token, "FINISHED")
                    break
        return errors


@contextlib.contextmanager
def open_executor(res_cfg: ResourcesConfig) -> Iterator[Executor]:
    """The executor ``resources.executor`` names, for the duration of a run: ``ray`` joins
    the cluster (``RAY_ADDRESS``, inside a job) or starts a local Ray and shuts it down
    after; ``local`` starts nothing."""
    if res_cfg.executor == "local":
        yield LocalExecutor(local_plan(res_cfg), max_failures=res_cfg.max_failures)
        return
    # lazy: ray_executor imports Ray, never imported on the local executor (test_local_pipeline)
    from orchestrator.runtime.ray_executor import open_ray_executor

    with open_ray_executor(res_cfg) as executor:
        yield executor
