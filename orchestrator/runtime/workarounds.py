"""Every Ray workaround of the orchestrator, each with what was measured and on which Ray.

All were seen with Ray 2.60.0 (Ray Train V2, ``RAY_TRAIN_V2_ENABLED=1``) on a 2-CPU
machine shared by several runs, and under ``ray job submit``. When Ray fixes one, delete
it here and the few call sites named in its docstring.

1. :data:`TRAIN_ENV`: Train's health-check interval and worker-group start timeout.
2. :func:`private_ray_tmpdir` / :func:`publish_address` / :func:`live_local_head`:
   a private ``RAY_TMPDIR`` and address file per locally started instance.
3. :func:`worker_pg_marker` / :func:`release_placement_group` /
   :func:`release_callback`: remove a finished run's placement group ourselves.
4. :data:`FINISHED_KEY`: a trial's last report says ``trial_finished``, not ``done``.
5. Ranks finish together (``barrier`` in ``TrainRuntime.finish``) and stages run their
   Train run inside a throw-away actor (``runtime.train.call_isolated``).
6. :mod:`orchestrator.runtime.worker_setup` (apart: it imports no Ray, since it runs at every
   worker's start): a ``SystemExit`` Python swallows ends the worker instead of printing a
   traceback into the log.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
from typing import Any

import ray
from ray import tune
from ray._private.utils import write_ray_address
from ray._raylet import PlacementGroupID
from ray.util.placement_group import (PlacementGroup, get_current_placement_group,
                                      remove_placement_group)

log = logging.getLogger(__name__)

# Ray Train V2 polls its workers every 2 s by default; 0.2 s cuts each short run's
# fixed cost from ~16 s to ~12.6 s (measured on 2 CPUs, DESIGN.md).
# A worker group that does not start within RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S
# (60 s) is retried with a new placement group; on a loaded 2-CPU machine worker
# processes can take longer than that to start, and the retries then starved the
# cluster (measured). Autoscaling clusters also need minutes to add GPU nodes.
TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
             "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "900"}

# Tune reads a reported "done" as "stop this trial" and killed the trainable while its
# Train controller still ran (a zombie that then held the CPUs): the last report of a
# trial says this key instead.
FINISHED_KEY = "trial_finished"

# The key under which Train workers report their placement group's id (hex).
PG_KEY = "pg_id"


def set_train_env() -> None:
    """Put :data:`TRAIN_ENV` into this process's environment (values already set win).

    Called by ``init_ray`` (driver), ``fit_torch`` and the isolated runner actor, since
    each may be the process that starts a Train controller.
    """
    for k, v in TRAIN_ENV.items():
        os.environ.setdefault(k, v)


def private_ray_tmpdir() -> None:
    """Give a locally started Ray instance a private ``RAY_TMPDIR`` (unless one is set).

    Ray Train V2's placement-group cleaner finds "the" cluster through Ray's address
    file under the temp dir (or a process scan); a stale file, or another sweep's
    instance on the same machine, made it act on the wrong cluster (seen here). A
    private temp dir, inherited by this instance's processes alone, gives the instance
    an address file no other run reads or writes.
    """
    if "RAY_TMPDIR" not in os.environ:
        os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="pdray-", dir="/tmp")


def publish_address(gcs_address: str) -> None:
    """Write the address file of a ``ray.init()``-started instance, as ``ray start`` does.

    Uses the private ``ray._private.utils.write_ray_address``: the Train V2 cleaner (see
    :func:`private_ray_tmpdir`) reads this file to find the cluster.
    """
    write_ray_address(gcs_address)


def live_local_head() -> bool:
    """Whether the `ray start` head named in Ray's address file accepts connections.

    A head that died left its address file behind, and ``ray.init()`` then waited on
    the dead address forever (seen here): ``init_ray`` joins only a live head.
    """
    root = os.path.join(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir(), "ray")
    try:
        with open(os.path.join(root, "ray_current_cluster")) as f:
            host, port = f.read().strip().rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except (OSError, ValueError):
        return False


def worker_pg_marker() -> dict[str, str]:
    """``{"pg_id": hex}`` of the calling Train worker's placement group, for its reports."""
    pg = get_current_placement_group()
    return {PG_KEY: pg.id.hex()} if pg is not None else {}


def release_placement_group(metrics: dict | None) -> None:
    """Remove a finished run's worker placement group if it is still there.

    Under ``ray job submit`` on 2 CPUs, Ray Train V2 (2.60) sometimes returned from
    ``fit()`` with the worker group's placement group still reserved, so the next
    run waited for resources forever; the workers report the group's id with each
    checkpoint (``Result.metrics`` are the latest checkpoint's) and the caller
    removes it (a no-op when Ray already did). Uses the private
    ``ray._raylet.PlacementGroupID`` to rebuild the handle from its id.
    """
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


def release_callback() -> Any:
    """A Tune callback removing a finished trial's worker placement group.

    The group id comes with the trial's reports (:data:`PG_KEY`); see
    :func:`release_placement_group` for why.
    """

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
        # with it and its worker group's placement group stayed reserved on a surviving
        # node, which the restarted attempt then waited for (seen when a node was removed).
        def on_trial_recover(self, iteration, trials, trial, **info):
            release_placement_group({PG_KEY: self.pg_ids.pop(trial.trial_id, None)})

    return ReleasePlacementGroups()


def driver_env_vars(env: dict[str, str]) -> dict[str, str]:
    """``env`` without the variables a submitted job's runtime_env already sets.

    Ray 2.60 merges ``ray.init(runtime_env=...)`` into the job's runtime_env and raises
    ValueError when both name the same variable (even with the same value); a job's
    variables are in the driver's environment too, so they are dropped here.
    """
    job_env = job_runtime_env().get("env_vars") or {}
    return {k: v for k, v in env.items() if k not in job_env}


def job_runtime_env() -> dict:
    """The runtime_env of the submitted job this driver runs in (``ray job submit``), from
    Ray's ``RAY_JOB_CONFIG_JSON_ENV_VAR``; ``{}`` outside a job."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "")
    try:
        env = json.loads(raw).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return {}
    return env if isinstance(env, dict) else {}
