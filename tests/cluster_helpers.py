"""Helpers of the multi-node tests: an in-process Ray cluster of several raylets, and
the sweep's outputs read back from the local S3 endpoint (tests/s3_helpers.py).

Every Ray process started here lives under a private temp dir (``RAY_TMPDIR``) and
is ended by the helper that started it (``Cluster.shutdown`` kills the processes of
each node it added, by PID); nothing here runs Ray's stop command (it ends every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import socket
import tempfile
import time
from typing import Any, Iterator

from tests.pipeline_helpers import REPO, patched_environ


def free_ports(n: int) -> list[int]:
    """``n`` TCP ports free on 127.0.0.1 now."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@contextlib.contextmanager
def ray_env(prefix: str) -> Iterator[str]:
    """A private ``RAY_TMPDIR`` (short: socket paths <= 107 chars) and the variables
    every Ray process of the test inherits; restores ``os.environ`` afterwards."""
    temp_dir = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    env = {"RAY_TMPDIR": temp_dir, "RAY_AUTH_MODE": "token", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    try:
        with patched_environ(env):
            yield temp_dir
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


@contextlib.contextmanager
def local_cluster(head_cpus: float, workers: list[dict[str, Any]],
                  timeout: float = 300, tries: int = 3) -> Iterator[Any]:
    """``ray.cluster_utils.Cluster``: a head with ``head_cpus`` CPUs plus one raylet per
    ``workers`` entry (``add_node`` kwargs, e.g. ``{"num_cpus": 1, "resources": {...}}``).

    Call it inside :func:`ray_env` (the nodes' temp dir is ``$RAY_TMPDIR/ray``).
    The nodes share the host's IP; a driver started on the host connects to the head
    (Ray prefers the head among nodes of one host). Yields the Cluster.
    """
    from ray.cluster_utils import Cluster

    # The dashboard serves the state API, which Ray Train V2's placement-group cleaner
    # needs to see that a controller died (without it a lost trial's group stayed
    # reserved); on a free port: 8265 may be another Ray's.
    head = {"num_cpus": head_cpus, "resources": {"head": 1.0}, "include_dashboard": True,
            "dashboard_port": free_ports(1)[0]}
    for attempt in range(1, tries + 1):
        cluster = Cluster(shutdown_at_exit=True)
        try:
            cluster.add_node(**head)
            for kw in workers:
                cluster.add_node(wait=False, **kw)
            cluster.wait_for_nodes(timeout=timeout)
            break
        except Exception:
            # A raylet gets 30 s to register (hard-coded in Ray 2.60's Node); at load
            # 40-80 on 2 cores that ran out (seen): start the cluster again.
            cluster.shutdown()
            if attempt == tries:
                raise
    try:
        yield cluster
    finally:
        cluster.shutdown()


def alive_nodes(cluster: Any) -> dict[str, dict[str, float]]:
    """``{node id: resources}`` of the cluster's alive nodes (read from its GCS)."""
    return {n["NodeID"]: n["Resources"] for n in cluster.global_state.node_table() if n["Alive"]}


def live_actors(cluster: Any, class_name: str) -> list[dict]:
    """Alive actors of a class: ``[{"node_id", "actor_id", "pid"}]`` (from the GCS)."""
    out = []
    for actor_id, a in cluster.global_state.actor_table(None).items():
        if a.get("ActorClassName", "").endswith(class_name) and a.get("State") == "ALIVE":
            out.append({"node_id": a["Address"]["NodeID"], "actor_id": actor_id, "pid": a.get("Pid")})
    return out


def s3_client(aws: dict[str, str]) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"])


def s3_read(aws: dict[str, str], bucket: str, key: str) -> bytes:
    return s3_client(aws).get_object(Bucket=bucket, Key=key)["Body"].read()


def s3_records(aws: dict[str, str], bucket: str, cache_prefix: str,
               train_steps: int | None = None) -> dict[str, dict]:
    """Finished trial result records in an s3 cache (``<prefix>/trial/*.json``) by trial
    name (optionally those of one ``train.steps`` only)."""
    from tests.s3_helpers import bucket_keys

    keys = bucket_keys(aws, bucket, f"{cache_prefix}/trial/")
    out = {}
    for k in keys:
        if k.endswith(".json") and f"{k}.sha256" in keys:
            rec = json.loads(s3_read(aws, bucket, k))
            if train_steps is None or rec["params"]["train_steps"] == train_steps:
                out[rec["trial"]["name"]] = rec
    return out


def s3_table(aws: dict[str, str], bucket: str, out_prefix: str) -> tuple[bytes, list[dict]]:
    """``<out_prefix>/report/results.csv``: its bytes and its rows."""
    data = s3_read(aws, bucket, f"{out_prefix}/report/results.csv")
    return data, list(csv.DictReader(io.StringIO(data.decode())))


def wait_for(predicate, timeout: float, every: float = 1.0, what: str = "condition") -> Any:
    """Poll ``predicate()`` until it returns something truthy (returned) or time runs out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"{what} not reached in {timeout:.0f}s")
