"""smoke.yaml on an autoscaling cluster: Ray's fake multi-node provider started from
tests/clusters/fake_aws.yaml (experiments/clusters/aws.yaml's node types, scaled down).

The head (``ray start --head --block`` with ``RAY_FAKE_CLUSTER=1``) offers no CPU,
so the sweep's demand is what makes the autoscaler "launch" worker nodes (raylets
started on this machine by the autoscaler's monitor); after the sweep the idle
nodes are terminated (``idle_timeout_minutes``). The head runs as a child process
in its own session with a private ``RAY_TMPDIR``; at the end exactly that session's
processes, and any process carrying that temp dir in its environment, are ended
by PID. Ray's stop command (and ``AutoscalingCluster.shutdown()``, which runs it) would end
every Ray instance on the machine, so neither is used.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.cluster_helpers import free_ports, ray_env, wait_for
from tests.pipeline_helpers import (REPO, assert_complete_table, child_env, cli, needs_fmnist,
                                    trial_records)

FAKE = REPO / "tests" / "clusters" / "fake_aws.yaml"
AWS = REPO / "experiments" / "clusters" / "aws.yaml"
HEAD_ID = "f" * 51 + "00000"   # the fake provider's head node id (its workers: ...00001, ...)


def test_fake_cluster_is_shaped_like_aws():
    fake, aws = (yaml.safe_load(p.read_text()) for p in (FAKE, AWS))
    assert fake["provider"]["type"] == "fake_multinode"
    # The fake provider's head has a fixed type name; it stands for aws.yaml's head.
    assert fake["head_node_type"] == "ray.head.default"
    fake_workers = set(fake["available_node_types"]) - {fake["head_node_type"]}
    assert fake_workers == set(aws["available_node_types"]) - {aws["head_node_type"]}
    head = fake["available_node_types"][fake["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and head.get("max_workers", 0) == 0
    for name, node in fake["available_node_types"].items():
        if name == fake["head_node_type"]:
            continue
        assert node["min_workers"] == aws["available_node_types"][name]["min_workers"] == 0
        assert 0 < node["max_workers"] <= aws["available_node_types"][name]["max_workers"]
        assert 0 < node["resources"]["CPU"] <= 2   # what one small machine can fake
    assert fake["max_workers"] <= aws["max_workers"]
    assert 0 < fake["idle_timeout_minutes"] < aws["idle_timeout_minutes"]


class NodeWatch(threading.Thread):
    """Polls the cluster's node table: when each node was first and last seen alive."""

    def __init__(self, address: str):
        super().__init__(daemon=True)
        import ray
        from ray._private.authentication.authentication_token_setup import _enable_token_auth
        from ray._raylet import GcsClientOptions

        # The cluster runs with RAY_AUTH_MODE=token; Ray caches its config per process
        # (read when ray was first imported here), so refresh it before connecting.
        _enable_token_auth()
        self.state = ray._private.state.GlobalState()
        self.state._initialize_global_state(GcsClientOptions.create(
            address, None, allow_cluster_id_nil=True, fetch_cluster_id_if_nil=False))
        self.first: dict[str, float] = {}
        self.last_alive: dict[str, float] = {}
        self.alive: set[str] = set()
        self.stop = threading.Event()

    def poll(self) -> None:
        now = time.time()
        alive = {n["NodeID"] for n in self.state.node_table() if n["Alive"]}
        for nid in alive:
            self.first.setdefault(nid, now)
            self.last_alive[nid] = now
        self.alive = alive

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.poll()
            except Exception:   # GCS not up yet / going down
                pass
            self.stop.wait(0.5)


def _end_processes(head: subprocess.Popen, temp_dir: str) -> list[int]:
    """End the head's session, then any process left with our RAY_TMPDIR; their PIDs."""
    import psutil

    if head.poll() is None:
        head.send_signal(signal.SIGTERM)   # `ray start --block` stops what it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(head.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    ended = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid != os.getpid() and proc.environ().get("RAY_TMPDIR") == temp_dir:
                proc.kill()
                ended.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return ended


def _start_head(cmd: list[str], env: dict, tmp_path: Path, address: str, temp_dir: str,
                tries: int = 3) -> tuple[subprocess.Popen, NodeWatch]:
    """Start the head and wait for it; returns (its process, a NodeWatch on it).

    ``ray start`` gives a raylet 30 s to register (hard-coded in Ray 2.60's Node); at
    load 40-80 on 2 cores it sometimes did not (seen), so a failed start is retried.
    """
    for attempt in range(1, tries + 1):
        log = tmp_path / f"head-{attempt}.log"
        head = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=open(log, "w"),
                                stderr=subprocess.STDOUT, start_new_session=True)

        def head_up():
            if head.poll() is not None:
                return "exited"
            try:
                w = NodeWatch(address)
                w.poll()
                return w if HEAD_ID in w.alive else None
            except Exception:
                return None

        up = wait_for(head_up, timeout=300, what="the fake cluster's head")
        if up != "exited":
            up.start()
            return head, up
        _end_processes(head, temp_dir)
        if attempt == tries:
            raise AssertionError(log.read_text()[-3000:])
    raise AssertionError("unreachable")


@pytest.mark.cluster
@pytest.mark.timeout(3600)
@needs_fmnist
def test_autoscaling_sweep_on_fake_aws_cluster(tmp_path):
    import ray

    gcs, client, agent, dash = free_ports(4)
    ip = ray._private.services.get_node_ip_address()
    address = f"{ip}:{gcs}"
    cfg = yaml.safe_load(FAKE.read_text())
    cfg = copy.deepcopy(cfg)
    cfg["provider"]["gcs_address"] = address
    # Ray 2.60's wheel lacks fake_multi_node/example.yaml, the defaults that
    # `prepare_config` merges in; the monitor reads this file as it is, so it is complete.
    with ray_env("pdas") as temp_dir:
        config_path = Path(temp_dir) / "autoscaling.json"
        config_path.write_text(json.dumps(cfg))
        bin_dir = str(Path(sys.executable).parent)
        # no 30 s drain of the head on SIGTERM (tests/test_job_submit.py)
        env = child_env(local_ray=False, RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1",
                        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
                        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
        cmd = [os.path.join(bin_dir, "ray"), "start", "--head", "--block", "--num-cpus=0",
               "--num-gpus=0", f"--port={gcs}", f"--autoscaling-config={config_path}",
               "--include-dashboard=false", f"--dashboard-port={dash}",
               f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
               "--disable-usage-stats"]
        head, watch = _start_head(cmd, env, tmp_path, address, temp_dir)
        try:
            assert watch.alive == {HEAD_ID}   # no worker before there is demand
            out_dir = tmp_path / "out"
            t0 = time.time()
            # Two trials (full, random; no proxy run): demand for two trial nodes.
            run = cli(["experiments/smoke.yaml", "--set", f"experiment.output_dir={out_dir}",
                       "--set", "pruning.methods=[{name: random}]",
                       "--set", "resources.cpus_per_worker=0.9"], timeout=2700,
                      env=child_env(local_ray=False, RAY_ADDRESS=address))
            t_sweep = time.time() - t0
            assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
            # Idle workers are terminated after idle_timeout_minutes.
            t1 = time.time()
            wait_for(lambda: watch.alive == {HEAD_ID}, timeout=300, what="idle nodes removed")
            t_down = time.time() - t1
        finally:
            watch.stop.set()
            leftovers = _end_processes(head, temp_dir)
            logs = Path(temp_dir) / "ray" / "session_latest" / "logs"
            monitor = "".join(p.read_text(errors="replace") for p in sorted(logs.glob("monitor*.log")))
            (tmp_path / "monitor.log").write_text(monitor)   # the autoscaler's decisions

    assert "autoscaler trial(s) at once" in run.stdout, run.stdout[-3000:]
    assert_complete_table(run.stdout, methods=("full", "random"), n_rows=2)
    workers = {nid: t for nid, t in watch.first.items() if nid != HEAD_ID}
    records = trial_records(out_dir / "cache")
    assert sorted(r["trial"]["method"] for r in records.values()) == ["full", "random"]
    per_node: dict[str, int] = {}
    for rec in records.values():
        assert rec["node_id"] in workers, (rec["trial"]["name"], rec["node_id"])
        assert all(math.isfinite(v) for v in rec["metrics"].values())
        per_node[rec["node_id"]] = per_node.get(rec["node_id"], 0) + 1
    assert len(workers) >= 2, workers   # the demand added more than one node
    scale_up = min(workers.values()) - t0
    print(f"\nautoscaling: {len(workers)} worker node(s) added, first after {scale_up:.0f}s "
          f"(sweep {t_sweep:.0f}s); added at +"
          + ", +".join(f"{t - t0:.0f}s" for t in sorted(workers.values()))
          + f"; trials per node {dict((n[-5:], c) for n, c in per_node.items())}; "
          f"all idle workers gone {t_down:.0f}s after the sweep; "
          f"{len(leftovers)} process(es) left at the end (ended by PID) (shared 2-core machine)")
    # The autoscaler's own account: worker nodes launched, and terminated as idle.
    assert ":event_summary:Adding" in monitor and "(idle)" in monitor, monitor[-3000:]
