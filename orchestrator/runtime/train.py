"""Ray Train runs: one ``TorchTrainer`` per run, isolated from the driver, and the
:class:`TrainRuntime` that gives :mod:`orchestrator.training` its rank, device and checkpoints.

The stages call :func:`fit_torch` for every Ray Train run (the VQ-VAE of a large dataset,
the proxy with several workers, each DDP sweep trial) so the scaling, failure and storage
settings are the same everywhere; a single-worker run is one Ray task
(:func:`call_as_worker`, :func:`fit_in_folder`).
"""

from __future__ import annotations

import tempfile
from typing import Any, Callable

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from orchestrator.runtime import workarounds
from orchestrator.runtime.resources import ResourcePlan
from orchestrator.training.loop import write_checkpoint_files
from orchestrator.training.run_folder import FolderRuntime


def fit_torch(train_fn: Callable[[dict], None], config: dict, plan: ResourcePlan, name: str,
              storage_path: str, max_failures: int, callbacks: list | None = None,
              num_workers: int | None = None, datasets: dict | None = None,
              solo: bool = False) -> Any:
    """Run one ``TorchTrainer`` (DDP: gloo on CPU, NCCL on GPU) and return its Result.

    ``name`` is fixed per run, so a rerun with the same name and storage resumes from
    the last reported checkpoint (``ray.train.get_checkpoint()`` in the workers).
    ``solo`` runs (nothing else scheduled beside them) get ``plan.solo_threads``.
    """
    workarounds.set_train_env()
    nw = num_workers or plan.num_workers
    trainer = TorchTrainer(
        train_fn,
        train_loop_config={**config, "threads": plan.solo_threads if solo else plan.torch_threads,
                           "use_gpu": bool(plan.worker_gpus)},
        torch_config=TorchConfig(backend="nccl" if plan.worker_gpus else "gloo"),
        scaling_config=ScalingConfig(num_workers=nw, use_gpu=bool(plan.worker_gpus),
                                     resources_per_worker=plan.worker_resources()),
        run_config=RunConfig(name=name, storage_path=storage_path, callbacks=callbacks or [],
                             # Worker-group start failures (e.g. no resources) retry
                             # forever by default: bound them so a stuck run fails.
                             failure_config=FailureConfig(max_failures=max_failures,
                                                          controller_failure_limit=3),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
        datasets=datasets,
    )
    result = trainer.fit()
    workarounds.release_placement_group(result.metrics)
    return result


class _Runner:
    """Owner of one stage's Ray Train run (see :func:`call_isolated`)."""

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        workarounds.set_train_env()
        return fn(*args, **kwargs)


def fit_only(*args: Any, **kwargs: Any) -> None:
    """:func:`fit_torch` without returning its Result (for :func:`call_isolated`)."""
    fit_torch(*args, **kwargs)


def call_isolated(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` in a throw-away zero-CPU actor, then kill the actor.

    A TorchTrainer started from the driver leaves its controller (and, with
    datasets, the placement group Ray Data reserved) alive as long as the driver
    holds a handle, which starves the next stage on a small cluster (measured on 2
    CPUs). Everything the trainer creates is owned by this actor, so killing it
    releases every actor and placement group of the run.
    """
    runner = ray.remote(num_cpus=0)(_Runner).remote()
    try:
        return ray.get(runner.call.remote(fn, *args, **kwargs))
    finally:
        ray.kill(runner)


def call_as_worker(fn: Callable[..., Any], plan: ResourcePlan, max_failures: int, name: str,
                   *args: Any) -> Any:
    """Run ``fn(*args)`` as one Ray task with one Train worker's resources (CPUs, GPU),
    retried up to ``max_failures`` times if its process dies; returns its result.

    For single-worker runs that need none of Ray Train's machinery (the VQ-VAE of a
    small dataset): no controller, placement group or dataset coordinator beside it.
    """
    res = plan.worker_resources()
    task = ray.remote(fn).options(num_cpus=res["CPU"], num_gpus=res.get("GPU", 0),
                                  max_retries=max_failures, name=name)
    return ray.get(task.remote(*args))


def fit_in_folder(train_fn: Callable[..., None], config: dict, run_dir: str) -> None:
    """``train_fn(config, FolderRuntime(run_dir))`` in this process (a Ray task from
    :func:`call_as_worker`): a single-worker run without Ray Train, its checkpoints in its
    run folder (local path or URI), where a retried or rerun task resumes from."""
    workarounds.set_train_env()
    train_fn(config, FolderRuntime(run_dir, "cuda" if config.get("use_gpu") else "cpu"))


def torch_threads(n: int) -> None:
    """Intra-op threads of this process (a fractional CPU request still gets >= 1)."""
    torch.set_num_threads(max(1, int(n)))


class TrainRuntime:
    """The Ray Train implementation of ``orchestrator.training.loop.TrialRuntime``.

    Built inside a Train worker (``TorchTrainer(train_fn)``): rank and world from the
    Train context, the device Ray assigned, DDP via ``prepare_model``, checkpoints and
    reports via ``ray.train.report`` (each report carries the worker's placement-group
    id, see ``workarounds.release_placement_group``).

    Single-worker sweep trials use ``runtime.tune.TuneRuntime`` instead (no TorchTrainer).
    """

    def __init__(self) -> None:
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self.node_id = ray.get_runtime_context().get_node_id()   # recorded in the result

    def prepare_model(self, model: Any) -> Any:
        return ray.train.torch.prepare_model(model)

    def save_checkpoint(self, metrics: dict[str, float], files: dict[str, dict]) -> None:
        with tempfile.TemporaryDirectory() as d:
            ckpt = None
            if files:
                write_checkpoint_files(d, files)
                ckpt = ray.train.Checkpoint.from_directory(d)
            # fit()'s Result carries the latest checkpoint's metrics: the group id rides here.
            ray.train.report({**metrics, **workarounds.worker_pg_marker()}, checkpoint=ckpt)

    def load_checkpoint(self, read: Callable[[str], Any]) -> Any:
        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            return read(d)

    def finish(self, metrics: dict[str, float]) -> None:
        if self.world > 1:
            # Every rank finishes together: a rank that returns while rank 0 still samples
            # left the run's placement group behind under Ray Train V2 (seen on 2 CPUs).
            dist.barrier()
        ray.train.report({workarounds.FINISHED_KEY: 1, **metrics, **workarounds.worker_pg_marker()})
