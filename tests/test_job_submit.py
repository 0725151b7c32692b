"""`ray job submit` of smoke.yaml to a local head started by the test (DDP, 2 workers).

The head runs as a child process (``ray start --head --block``) on free 127.0.0.1
ports and is terminated in ``finally``, even when the job fails. Every Ray process
gets ``RAY_AUTH_MODE=token``, the mode in-process ``ray.init()`` uses (DESIGN.md).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.cluster_helpers import free_ports
from tests.pipeline_helpers import (REPO, assert_complete_table, child_env, needs_fmnist,
                                    shared_cache, trial_records)

STEPS = 12   # train.steps of this test's trial (the shared cache's local run: smoke's 20)
# one DDP trial: the job's path (submit, working dir, joining the head, the table) is the
# point here; DDP trials one after another and their resume: the worker-kill drill
METHODS = ("random",)


def _wait_dashboard(url: str, head: subprocess.Popen, timeout: float = 420) -> None:
    # 180 s was too short once on a 2-core machine at load 20 (three Ray runs beside it)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=5):
                return
        except urllib.error.HTTPError:
            return   # up (401 without a token under RAY_AUTH_MODE=token)
        except OSError:
            pass
        time.sleep(2)
    raise TimeoutError(f"Ray dashboard at {url} did not come up in {timeout:.0f}s")


def _stop_head(head: subprocess.Popen) -> None:
    """Terminate `ray start --block` (it stops the processes it started), then its group."""
    if head.poll() is None:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(head.pid, signal.SIGKILL)   # anything of this head left in its session
    except (ProcessLookupError, PermissionError):
        pass


@pytest.mark.ray
@pytest.mark.timeout(1500)
@needs_fmnist
def test_ray_job_submit_smoke_ddp(tmp_path, tmp_path_factory):
    cache = shared_cache(tmp_path_factory)
    gcs, dash, client, agent = free_ports(4)
    bin_dir = str(Path(sys.executable).parent)
    # RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0: on SIGTERM Ray 2.60's `ray start --block`
    # otherwise drains the node for up to 30 s (for Serve replicas; none here): 30 s of
    # this test's 91 s
    env = child_env(local_ray=False, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                    RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    # A private temp dir keeps this head's address out of /tmp/ray/ray_current_cluster,
    # so no other ray.init() on the machine joins it (short: socket paths <= 107 chars).
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")
    head = subprocess.Popen(
        [os.path.join(bin_dir, "ray"), "start", "--head", "--block", "--num-cpus=2", "--num-gpus=0",
         "--node-ip-address=127.0.0.1", f"--port={gcs}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
         f"--dashboard-agent-listen-port={agent}", f"--temp-dir={temp_dir}",
         "--disable-usage-stats"],
        cwd=tmp_path, env=env, stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        _wait_dashboard(url, head)
        out_dir = tmp_path / "out"
        job = subprocess.run(
            [os.path.join(bin_dir, "ray"), "job", "submit", "--address", url, "--working-dir", ".",
             "--runtime-env-json", '{"excludes": [".venv", ".git", "/outputs", "/data"]}', "--",
             "python", "-m", "orchestrator.run", "experiments/smoke.yaml",
             "--set", f"experiment.output_dir={out_dir}", "--set", f"storage.cache_dir={cache}",
             "--set", "resources.num_workers=2", "--set", f"train.steps={STEPS}",
             "--set", "pruning.methods=[{name: random}]", "--set", "pruning.baseline=false"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=1300)
        log = job.stdout + job.stderr
        assert job.returncode == 0, log[-4000:]
        assert "succeeded" in log, log[-2000:]
        assert_complete_table(log, METHODS, len(METHODS))
        assert "mlflow ui --backend-store-uri sqlite:///" in log
        assert (out_dir / "report" / "results.csv").is_file()
    finally:
        _stop_head(head)
        shutil.rmtree(temp_dir, ignore_errors=True)

    records = trial_records(cache, STEPS)
    assert sorted(r["trial"]["method"] for r in records.values()) == sorted(METHODS)
    single = {r["trial"]["method"]: r for r in trial_records(cache, 20).values()}
    for rec in records.values():
        assert rec["world_size"] == 2
        assert rec["loss_curve"][-1][0] == STEPS
        assert all(math.isfinite(loss) for _, loss in rec["loss_curve"])
        assert all(math.isfinite(v) for v in rec["metrics"].values())
        one = single[rec["trial"]["method"]]   # the shared cache's 1-worker local run
        assert one["params"]["subset_hash"] == rec["params"]["subset_hash"]   # same subset
        assert one["params"]["n_train"] == rec["params"]["n_train"]
