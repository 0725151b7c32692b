"""Ray plumbing shared by the stages: starting Ray, one TorchTrainer run, actor-pool maps.

Only ``orchestrator`` imports Ray. The stages call :func:`fit_torch` for every
Ray Train run (VQ-VAE, proxy, each sweep trial) so the scaling, failure and storage
settings are the same everywhere, and :func:`map_actor_pool` for every Ray Data
``map_batches`` pass (encode, embed).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

import numpy as np

from orchestrator.resources import ResourcePlan

log = logging.getLogger(__name__)

# Ray Train V2 polls its workers every 2 s by default; 0.2 s cuts each short run's
# fixed cost from ~16 s to ~12.6 s (measured on 2 CPUs, DESIGN.md).
# A worker group that does not start within RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S
# (60 s) is retried with a new placement group; on a loaded 2-CPU machine worker
# processes can take longer than that to start, and the retries then starved the
# cluster (measured). Autoscaling clusters also need minutes to add GPU nodes.
TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
             "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "900"}


def say(fmt: str, *args: Any) -> None:
    """A progress line on stdout (shown at the CLI's default log level)."""
    print(f"[prunediff {time.strftime('%H:%M:%S')}] " + (fmt % args if args else fmt), flush=True)


def init_ray() -> bool:
    """Connect to the cluster (``RAY_ADDRESS`` / inside a job) or start a local one.

    Returns True when this call started Ray (so the caller shuts it down).
    """
    import ray

    for k, v in TRAIN_ENV.items():
        os.environ.setdefault(k, v)
    if ray.is_initialized():
        return False
    # Inside `ray job submit` RAY_ADDRESS is set and ray.init() joins the job's
    # cluster; beside a live `ray start` head it joins that. A head that died left
    # its address file behind, and ray.init() then waits on the dead address
    # forever (seen here): start a local instance instead.
    joining = os.environ.get("RAY_ADDRESS", "local") != "local" or _live_local_head()
    if not joining and "RAY_TMPDIR" not in os.environ:
        # Ray Train V2's placement-group cleaner finds "the" cluster through Ray's
        # address file under the temp dir (or a process scan); a stale file, or another
        # sweep's instance on the same machine, made it act on the wrong cluster (seen
        # here). A private temp dir, inherited by this instance's processes alone,
        # gives the instance an address file no other run reads or writes.
        import tempfile

        os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="pdray-", dir="/tmp")
    ray.init(address=None if joining else "local", logging_level=logging.WARNING,
             log_to_driver=True)
    if not joining:
        from ray._private.utils import write_ray_address

        write_ray_address(ray.get_runtime_context().gcs_address)   # as `ray start` does
    return True


def _live_local_head() -> bool:
    """Whether the `ray start` head named in Ray's address file accepts connections."""
    import socket
    import tempfile

    root = os.path.join(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir(), "ray")
    try:
        with open(os.path.join(root, "ray_current_cluster")) as f:
            host, port = f.read().strip().rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except (OSError, ValueError):
        return False


PG_KEY = "pg_id"


def worker_pg_marker() -> dict[str, str]:
    """``{"pg_id": hex}`` of the calling Train worker's placement group, for its final report."""
    from ray.util.placement_group import get_current_placement_group

    pg = get_current_placement_group()
    return {PG_KEY: pg.id.hex()} if pg is not None else {}


def release_placement_group(metrics: dict | None) -> None:
    """Remove a finished run's worker placement group if it is still there.

    Under ``ray job submit`` on 2 CPUs, Ray Train V2 (2.60) sometimes returned from
    ``fit()`` with the worker group's placement group still reserved, so the next
    run waited for resources forever; the workers report the group's id with each
    checkpoint (``Result.metrics`` are the latest checkpoint's) and the caller
    removes it (a no-op when Ray already did).
    """
    import ray
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    pg_hex = (metrics or {}).get(PG_KEY)
    if not pg_hex:
        return
    state = ray.util.placement_group_table().get(pg_hex, {}).get("state")
    if state not in (None, "REMOVED"):
        try:
            remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(pg_hex)))
            log.info("removed the leftover placement group %s (%s)", pg_hex, state)
        except Exception as e:  # already gone, or a race with Ray's own removal
            log.warning("could not remove placement group %s: %s", pg_hex, e)


def fit_torch(train_fn: Callable[[dict], None], config: dict, plan: ResourcePlan, name: str,
              storage_path: str, max_failures: int, callbacks: list | None = None,
              num_workers: int | None = None, datasets: dict | None = None,
              solo: bool = False) -> Any:
    """Run one ``TorchTrainer`` (DDP: gloo on CPU, NCCL on GPU) and return its Result.

    ``name`` is fixed per run, so a rerun with the same name and storage resumes from
    the last reported checkpoint (``ray.train.get_checkpoint()`` in the workers).
    ``solo`` runs (nothing else scheduled beside them) get ``plan.solo_threads``.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    for k, v in TRAIN_ENV.items():
        os.environ.setdefault(k, v)
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
    release_placement_group(result.metrics)
    return result


class _Runner:
    """Owner of one stage's Ray Train run (see :func:`call_isolated`)."""

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        for k, v in TRAIN_ENV.items():
            os.environ.setdefault(k, v)
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
    import ray

    runner = ray.remote(num_cpus=0)(_Runner).remote()
    try:
        return ray.get(runner.call.remote(fn, *args, **kwargs))
    finally:
        ray.kill(runner)


def map_actor_pool(ds: Any, actor_cls: type, ctor_kwargs: dict, plan: ResourcePlan,
                   batch_size: int) -> Any:
    """``ds.map_batches(actor_cls)`` on an actor pool sized and requested from ``plan``."""
    from ray.data import ActorPoolStrategy

    return ds.map_batches(
        actor_cls, fn_constructor_kwargs=ctor_kwargs, batch_size=batch_size,
        compute=ActorPoolStrategy(size=plan.actor_pool_size), batch_format="numpy",
        num_cpus=plan.actor_cpus, num_gpus=plan.actor_gpus or None)


def collect_by_id(ds: Any, columns: list[str]) -> dict[str, np.ndarray]:
    """Gather a dataset's columns into arrays ordered by the ``id`` column."""
    parts: dict[str, list[np.ndarray]] = {c: [] for c in ["id", *columns]}
    for batch in ds.iter_batches(batch_size=4096, batch_format="numpy"):
        for c in parts:
            parts[c].append(np.asarray(batch[c]))
    out = {c: np.concatenate(v) if v else np.zeros((0,)) for c, v in parts.items()}
    order = np.argsort(out["id"], kind="stable")
    return {c: v[order] for c, v in out.items()}


def torch_threads(n: int) -> None:
    """Intra-op threads of this process (a fractional CPU request still gets >= 1)."""
    import torch

    torch.set_num_threads(max(1, int(n)))
