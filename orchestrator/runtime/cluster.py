"""Starting or joining Ray, and the Ray Data actor-pool passes of the encode/embed stages."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from orchestrator.runtime import workarounds
from orchestrator.runtime.resources import ResourcePlan


def init_ray() -> bool:
    """Connect to the cluster (``RAY_ADDRESS`` / inside a job) or start a local one.

    Returns True when this call started Ray (so the caller shuts it down).
    """
    import ray

    from orchestrator.runtime.quiet import quiet_output

    quiet_output()   # before ray.init: its environment reaches the local workers
    workarounds.set_train_env()
    if ray.is_initialized():
        return False
    # Inside `ray job submit` RAY_ADDRESS is set and ray.init() joins the job's
    # cluster; beside a live `ray start` head it joins that.
    joining = os.environ.get("RAY_ADDRESS", "local") != "local" or workarounds.live_local_head()
    if not joining:
        workarounds.private_ray_tmpdir()
    ray.init(address=None if joining else "local", logging_level=logging.WARNING,
             log_to_driver=True)
    if not joining:
        workarounds.publish_address(ray.get_runtime_context().gcs_address)
    return True


def map_actor_pool(ds: Any, actor_cls: type, ctor_kwargs: dict, plan: ResourcePlan,
                   batch_size: int) -> Any:
    """``ds.map_batches(actor_cls)`` on an actor pool sized and requested from ``plan``.

    Ray Data's progress bars are turned off when stdout is not a terminal (a log file
    got one redraw line per update, issue #13).
    """
    import sys

    from ray.data import ActorPoolStrategy, DataContext

    if not sys.stdout.isatty():
        DataContext.get_current().enable_progress_bars = False

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
