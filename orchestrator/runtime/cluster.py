"""Starting or joining Ray, the connected cluster's :class:`ResourcePlan`, and the Ray Data
actor-pool passes of the encode/embed stages."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import numpy as np
import ray
from ray.data import ActorPoolStrategy, DataContext

from models.weights import weights_env
from orchestrator.config.schema import ResourcesConfig
from orchestrator.runtime import workarounds
from orchestrator.runtime.quiet import quiet_output
from orchestrator.runtime.resources import ResourcePlan, plan_resources
from orchestrator.runtime.worker_setup import setup_hook


def init_ray() -> bool:
    """Connect to the cluster (``RAY_ADDRESS`` / inside a job) or start a local one.

    Returns True when this call started Ray (so the caller shuts it down).
    """
    quiet_output()   # before ray.init: its environment reaches the local workers
    workarounds.set_train_env()
    if ray.is_initialized():
        return False
    # Inside `ray job submit` RAY_ADDRESS is set and ray.init() joins the job's
    # cluster; beside a live `ray start` head it joins that.
    joining = os.environ.get("RAY_ADDRESS", "local") != "local" or workarounds.live_local_head()
    if not joining:
        workarounds.private_ray_tmpdir()
    # Every worker resolves embedder weights as the driver does (HF cache, HF_ENDPOINT,
    # HF_HUB_OFFLINE, proxies, PRUNEDIFF_WEIGHTS): the driver's settings travel with the job.
    # Inside `ray job submit` the job's own runtime_env applies, merged with these.
    env = workarounds.driver_env_vars(weights_env())
    # Every worker process starts with runtime.worker_setup (workaround 6).
    runtime_env = {**setup_hook(workarounds.job_runtime_env()),
                   **({"env_vars": env} if env else {})}
    ray.init(address=None if joining else "local", logging_level=logging.WARNING,
             log_to_driver=True, runtime_env=runtime_env or None)
    if not joining:
        workarounds.publish_address(ray.get_runtime_context().gcs_address)
    return True


def current_plan(res_cfg: ResourcesConfig) -> ResourcePlan:
    """:func:`~orchestrator.runtime.resources.plan_resources` for the connected Ray cluster."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    return plan_resources(res_cfg, ray.cluster_resources(), nodes)


def map_actor_pool(ds: Any, actor_cls: type, ctor_kwargs: dict, plan: ResourcePlan,
                   batch_size: int) -> Any:
    """``ds.map_batches(actor_cls)`` on an actor pool sized and requested from ``plan``.

    Ray Data's progress bars are turned off when stdout is not a terminal (a log file
    got one redraw line per update, issue #13).
    """
    if not sys.stdout.isatty():
        DataContext.get_current().enable_progress_bars = False

    return ds.map_batches(
        actor_cls, fn_constructor_kwargs=ctor_kwargs, batch_size=batch_size,
        compute=ActorPoolStrategy(size=plan.actor_pool_size), batch_format="numpy",
        num_cpus=plan.actor_cpus, num_gpus=plan.actor_gpus or None)


def collect_by_id(ds: Any, columns: list[str]) -> dict[str, np.ndarray]:
    """Gather a dataset's columns into arrays ordered by the ``id`` column.

    Only for small outputs (benchmarks, tests): the stages write per-sample arrays as
    table parts in their workers (:func:`write_table`) and gather nothing here.
    """
    parts: dict[str, list[np.ndarray]] = {c: [] for c in ["id", *columns]}
    for batch in ds.iter_batches(batch_size=4096, batch_format="numpy"):
        for c in parts:
            parts[c].append(np.asarray(batch[c]))
    out = {c: np.concatenate(v) if v else np.zeros((0,)) for c, v in parts.items()}
    order = np.argsort(out["id"], kind="stable")
    return {c: v[order] for c, v in out.items()}


def collect_reports(ds: Any) -> list[dict]:
    """The JSON ``report`` column of a pass whose actors wrote table parts (one small
    row per batch: the part's description and the batch's skipped rows)."""
    out: list[dict] = []
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        out.extend(json.loads(str(r)) for r in batch["report"])
    return out


def good_rows(ds: Any) -> Any:
    """The rows of a source's dataset that decoded (``error == ""``), lazily."""
    return ds.map_batches(_drop_bad, batch_format="numpy")


def _drop_bad(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if "error" not in batch:
        return batch
    ok = np.array([not e for e in batch["error"]], dtype=bool)
    return {k: v[ok] for k, v in batch.items()}


def gather_in_task(ds: Any, columns: list[str]) -> list[Any]:
    """Object refs of ``columns``' blocks (computed by Ray tasks, never on the driver):
    pass them to a task, which joins them with :func:`join_refs`."""
    return [ds.to_numpy_refs(column=c) for c in columns]


def join_refs(refs: list[list[Any]]) -> list[np.ndarray]:
    """In a task: the arrays behind :func:`gather_in_task`'s refs, concatenated per column."""
    return [np.concatenate(ray.get(r)) if r else np.zeros((0,)) for r in refs]


def run_tasks(fn: Any, plan: ResourcePlan, calls: list[tuple], name: str) -> list[Any]:
    """``fn(*args)`` for each ``args`` in ``calls`` as Ray tasks with one worker's
    resources (its GPU when the plan has one), all submitted at once; their results in
    order."""
    res = plan.worker_resources()
    task = ray.remote(fn).options(num_cpus=res["CPU"], num_gpus=res.get("GPU", 0), name=name)
    return ray.get([task.remote(*args) for args in calls])
