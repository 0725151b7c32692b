"""The Ray executor: the stages' work on a Ray cluster (see :mod:`orchestrator.runtime.executor`).

Sources are Ray Data datasets (:mod:`orchestrator.runtime.ray_sources`), encode/embed
passes are ``map_batches`` actor pools, tasks are Ray tasks with one worker's resources
(:mod:`orchestrator.runtime.cluster`), training runs (the VQ-VAE of a large dataset, the
proxy with several workers) are Ray Train runs in an isolated actor
(:mod:`orchestrator.runtime.train`; a single-worker run is one Ray task), and the sweep is
a Ray Tune grid (:mod:`orchestrator.runtime.trials`).

This module imports Ray; ``runtime.executor.open_executor`` imports it only when
``resources.executor`` is ``ray``, so the local executor never imports Ray. It does not
import ``runtime.executor`` (which imports it): the executor's types are ``Any`` here.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import ray

from orchestrator.config.schema import ResourcesConfig
from orchestrator.data.base import SourceData
from orchestrator.data.sources import SOURCES
from orchestrator.runtime import cluster, train
from orchestrator.runtime.ray_sources import ray_view
from orchestrator.runtime.resources import ResourcePlan
from orchestrator.runtime.trials import run_tune_grid
from orchestrator.storage.fsutil import join


class RayExecutor:
    """Ray Data, Ray tasks, Ray Train and a Ray Tune grid, sized by a :class:`ResourcePlan`."""

    name = "ray"
    in_memory = False

    def __init__(self, plan: ResourcePlan, max_failures: int = 1) -> None:
        self.plan, self.max_failures = plan, max_failures

    def source(self, ds: Any, role: str = "train", cap: int | None = None) -> SourceData:
        return ray_view(SOURCES[ds.source], ds, role, cap)

    def good_rows(self, dataset: Any) -> Any:
        return cluster.good_rows(dataset)

    def map_rows(self, dataset: Any, actor_cls: type, ctor_kwargs: dict,
                 batch_size: int) -> list[dict]:
        return cluster.collect_reports(cluster.map_actor_pool(dataset, actor_cls, ctor_kwargs,
                                                              self.plan, batch_size))

    def gather(self, dataset: Any, columns: list[str]) -> Any:
        """Object refs of the columns' blocks, computed once by Ray tasks (materialized:
        in the dataset's order), never pulled to the driver."""
        return cluster.gather_in_task(dataset.materialize(), columns)

    def run_tasks(self, fn: Callable[..., Any], calls: list[tuple], name: str) -> list[Any]:
        return cluster.run_tasks(fn, self.plan, calls, name)

    def call_as_worker(self, fn: Callable[..., Any], name: str, *args: Any) -> Any:
        return train.call_as_worker(fn, self.plan, self.max_failures, name, *args)

    def fit(self, train_fn: Callable[..., None], config: dict, name: str,
            storage: str) -> None:
        """``train_fn`` (the proxy) on the plan's workers, checkpoints under ``storage/name``.

        One worker: one Ray task with a worker's resources, checkpoints in its run folder as
        on the local executor (no Train controller, placement group or worker group, each a
        process to start: smoke.yaml to the score stage took 18.5 s instead of 33 s on 2
        CPUs, 2026-12-06); retried from the folder if its process dies. Several: a DDP Ray
        Train run in an isolated actor."""
        if self.plan.num_workers == 1:
            cfg = {**config, "threads": self.plan.solo_threads,
                   "use_gpu": bool(self.plan.worker_gpus)}
            train.call_as_worker(train.fit_in_folder, self.plan, self.max_failures, name,
                                 train_fn, cfg, join(storage, name))
            return
        train.call_isolated(train.fit_only, train_fn, config, self.plan, name, storage,
                            self.max_failures, solo=True)

    def fit_on_shards(self, fn: Callable[..., Any], config: dict, name: str, storage: str,
                      dataset: Any, *args: Any) -> Any:
        """``fn(config, plan, name, storage, max_failures, dataset, *args)`` in an isolated
        actor: a DDP run over the dataset's Ray Data shards (the VQ-VAE of a large dataset).

        The dataset is materialized first (its read tasks run once, now, so the workers
        only fetch finished blocks) when no CPU is left for Ray Data's tasks beside the
        workers, or when ``config["in_memory"]`` (a small dataset: unmaterialized,
        ``streaming_split`` reads and decodes it again for every epoch, on the CPUs the
        training uses)."""
        if self.plan.spare_cpus() < 1.0 or config.get("in_memory"):
            dataset = dataset.materialize()
        return train.call_isolated(fn, config, self.plan, name, storage, self.max_failures,
                                   dataset, *args)

    def run_trials(self, trials: Any) -> dict[str, str]:
        """Every trial of ``trials`` (a ``runtime.executor.TrialJobs``) in one Tune grid."""
        return run_tune_grid(trials, self.plan)


@contextlib.contextmanager
def open_ray_executor(res_cfg: ResourcesConfig) -> Iterator[RayExecutor]:
    """A :class:`RayExecutor` on the cluster (``RAY_ADDRESS``, inside a job) or on a local
    Ray started here and shut down after."""
    started = cluster.init_ray()
    try:
        yield RayExecutor(cluster.current_plan(res_cfg), res_cfg.max_failures)
    finally:
        if started:
            ray.shutdown()
