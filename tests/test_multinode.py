"""smoke.yaml on a local multi-node Ray cluster, its output dir on a local S3 endpoint.

The cluster (tests/cluster_helpers.py) is a CPU-less head plus two 1-CPU worker
raylets with their own custom resources and node ids, so every trial, Train worker
and Ray Data actor runs on a worker node, and every artifact goes through s3:// (no
stage can read a file another node wrote locally). The drivers are
``python -m orchestrator.run`` subprocesses joining the cluster through
``RAY_ADDRESS``; they connect to the head.

- ``test_multinode_sweep_matches_single_node``: the same config on a one-node
  cluster with the same two CPUs gives a byte-identical results table and
  identical per-trial metrics; the trial records name worker nodes only.
- ``test_worker_node_removed_mid_sweep``: one worker node is killed while a trial
  runs on it; Tune restarts the lost trials (``resources.max_failures``), they resume
  from their last checkpoint in the bucket, the table is complete.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time

import pytest

pytest.importorskip("moto.server", reason="moto[server] is in the dev extras")

from tests.cluster_helpers import (alive_nodes, live_actors, local_cluster, ray_env,  # noqa: E402
                                   s3_records, s3_table, wait_for)
from tests.pipeline_helpers import (REPO, SMOKE_METHODS, assert_complete_table, child_env,  # noqa: E402
                                    cli, needs_fmnist)
from tests.s3_helpers import bucket_keys, local_s3  # noqa: E402

BUCKET = "prunediff-multinode"
# One smoke.yaml run takes minutes on a quiet 2-core machine; 20 min once ran out
# at load 40-80 (other sessions' tests beside it): this bounds hangs only.
RUN_TIMEOUT = 2400
SMOKE_STEPS = 20   # smoke.yaml's train.steps (the drill trains 30: trials of its own)
WORKERS = [{"num_cpus": 1, "resources": {"worker_a": 1.0}},
           {"num_cpus": 1, "resources": {"worker_b": 1.0}}]


@pytest.fixture(scope="module")
def aws():
    """One local S3 endpoint for the module: the drill reuses the upstream artifacts
    (VQ-VAE, latents, embeddings, proxy) that the first test left in the bucket."""
    with local_s3(BUCKET) as env:
        yield env


def _args(prefix: str, tmp_path, *extra: str) -> list[str]:
    return ["experiments/smoke.yaml", "--set", f"experiment.output_dir=s3://{BUCKET}/{prefix}",
            "--set", f"mlflow.tracking_uri=sqlite:///{tmp_path}/{prefix}-mlflow.db", *extra]


def _env(cluster, aws: dict[str, str]) -> dict[str, str]:
    return child_env(local_ray=False, RAY_ADDRESS=cluster.address, **aws)


def _worker_ids(cluster) -> dict[str, str]:
    """``{"worker_a": node id, "worker_b": node id}`` (the head has none of these)."""
    nodes = alive_nodes(cluster)
    return {res: nid for nid, r in nodes.items() for res in ("worker_a", "worker_b") if res in r}


@pytest.mark.cluster
@pytest.mark.timeout(5400)
@needs_fmnist
def test_multinode_sweep_matches_single_node(tmp_path, aws):
    timings = {}
    with ray_env("pdmn"):
        # Reference: one node with the two CPUs the multi-node cluster has in all, so
        # the resource plan (threads, fractions, concurrency) is the same.
        with local_cluster(2, []) as single:
            single_head = single.head_node.node_id
            t0 = time.time()
            one = cli(_args("single", tmp_path), timeout=RUN_TIMEOUT, env=_env(single, aws))
            timings["single"] = time.time() - t0
        assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]

        with local_cluster(0, WORKERS) as multi:
            head = multi.head_node.node_id
            workers = _worker_ids(multi)
            assert len(set(workers.values()) | {head}) == 3, (head, workers)
            assert alive_nodes(multi)[head].get("CPU", 0) == 0
            t0 = time.time()
            many = cli(_args("multi", tmp_path), timeout=RUN_TIMEOUT, env=_env(multi, aws))
            timings["multi"] = time.time() - t0
        assert many.returncode == 0, many.stdout[-3000:] + many.stderr[-3000:]
        assert "cluster 2 CPU / 0 GPU" in many.stdout      # planned from all nodes' CPUs
        assert_complete_table(many.stdout)
        assert not (REPO / "s3:").exists()

        rec_one = s3_records(aws, BUCKET, "single/cache", train_steps=SMOKE_STEPS)
        rec_many = s3_records(aws, BUCKET, "multi/cache", train_steps=SMOKE_STEPS)
        csv_one, rows_one = s3_table(aws, BUCKET, "single")
        csv_many, rows_many = s3_table(aws, BUCKET, "multi")
        keys = bucket_keys(aws, BUCKET, "multi/")
    print(f"\nsmoke.yaml wall time: single node {timings['single']:.0f}s, "
          f"head + 2 workers {timings['multi']:.0f}s (shared 2-core machine)")

    assert sorted(r["trial"]["method"] for r in rec_many.values()) == sorted(SMOKE_METHODS)
    per_node: dict[str, int] = {}
    for rec in rec_many.values():
        assert rec["node_id"] in workers.values(), (rec["trial"]["name"], rec["node_id"], workers)
        per_node[rec["node_id"]] = per_node.get(rec["node_id"], 0) + 1
    print("trials per node:", {name: per_node.get(nid, 0) for name, nid in workers.items()})
    assert {r["node_id"] for r in rec_one.values()} == {single_head}
    # the checkpoints of the proxy and the trials (run folders in Ray storage) went to the
    # bucket too
    ckpts = [k for k in keys if k.startswith("multi/ray_results/") and "/checkpoint_" in k]
    assert any(k.startswith("multi/ray_results/proxy-") for k in ckpts), ckpts
    assert any(k.startswith("multi/ray_results/trials/") for k in ckpts), ckpts

    # Same seeds, same threads: the metrics are bit-identical, trial by trial.
    assert rec_many.keys() == rec_one.keys()
    for name, rec in rec_many.items():
        assert rec["params"] == {**rec_one[name]["params"]}, name
        assert rec["metrics"] == rec_one[name]["metrics"], name
        assert rec["loss_curve"] == rec_one[name]["loss_curve"], name
        assert all(math.isfinite(v) for v in rec["metrics"].values()), name
    assert rows_many == rows_one
    assert csv_many == csv_one


def _checkpointed_runs(aws: dict[str, str], prefix: str) -> tuple[set[str], set[str]]:
    """(trial runs started, trial runs with a checkpoint) under ``prefix``'s Ray storage:
    a TorchTrainer run's ``checkpoint_<date>/`` or a single-worker trial's finished
    ``checkpoint_<step>/.complete`` (``orchestrator.runtime.tune``)."""
    keys = bucket_keys(aws, BUCKET, f"{prefix}/ray_results/trials/")
    started = {k.split("/")[3] for k in keys}
    ckpt = {k.split("/")[3] for k in keys
            if "/checkpoint_20" in k or (k.endswith("/.complete") and "/checkpoint_" in k)}
    return started, ckpt


@pytest.mark.cluster
@pytest.mark.timeout(5400)
@needs_fmnist
def test_worker_node_removed_mid_sweep(tmp_path, aws):
    steps, every = 30, 10
    with ray_env("pdkn"), local_cluster(0, WORKERS) as cluster:
        workers = _worker_ids(cluster)
        victim = next(n for n in cluster.worker_nodes if n.node_id == workers["worker_a"])
        # Two trials (full, random: no proxy run), one per worker node; upstream
        # artifacts from the shared cache when the first test left them there.
        args = _args("drill", tmp_path, "--set", f"storage.cache_dir=s3://{BUCKET}/multi/cache",
                     "--set", "pruning.methods=[{name: random}]", "--set", f"train.steps={steps}",
                     "--set", f"train.checkpoint_every={every}", "--set", "resources.max_failures=2")
        log = open(tmp_path / "driver.log", "w+")
        driver = subprocess.Popen([sys.executable, "-m", "orchestrator.run", *args], cwd=REPO,
                                  env=_env(cluster, aws), stdout=log, stderr=subprocess.STDOUT,
                                  text=True)
        try:
            # A trial's Train worker runs on worker_a and every started trial has a
            # checkpoint in the bucket: remove worker_a (its raylet and workers killed).
            def ready():
                if driver.poll() is not None:
                    raise AssertionError("the driver exited before the node was removed")
                # a single-worker trial trains in its Tune trainable (ImplicitFunc)
                on_a = [a for cls in ("ImplicitFunc", "RayTrainWorker")
                        for a in live_actors(cluster, cls) if a["node_id"] == workers["worker_a"]]
                started, ckpt = _checkpointed_runs(aws, "drill")
                return bool(on_a) and started and started <= ckpt and started

            running = wait_for(ready, timeout=RUN_TIMEOUT, every=0.5,
                               what="a checkpointed trial on worker_a")
            t_kill = time.time()
            cluster.remove_node(victim, allow_graceful=False)
            rc = driver.wait(timeout=RUN_TIMEOUT)
        finally:
            if driver.poll() is None:
                driver.kill()
        log.seek(0)
        out = log.read()
        assert rc == 0, out[-5000:]
        assert_complete_table(out, methods=("full", "random"), n_rows=2)
        records = s3_records(aws, BUCKET, "multi/cache", train_steps=steps)
    print(f"\nremoved worker_a at {time.strftime('%H:%M:%S', time.localtime(t_kill))} "
          f"while runs {sorted(running)} were in flight")

    assert sorted(r["trial"]["method"] for r in records.values()) == ["full", "random"]
    for rec in records.values():
        assert rec["loss_curve"][-1][0] == steps
        assert all(math.isfinite(v) for v in rec["metrics"].values()), rec["trial"]["name"]
        if rec["finished_at"] > t_kill:   # finished after the kill: on the surviving node
            assert rec["node_id"] == workers["worker_b"], rec["trial"]["name"]
    # The trial cut on worker_a continued from its checkpoint in the bucket.
    resumed = [r for r in records.values() if r["resumed_from_step"] >= every]
    assert resumed, {n: r["resumed_from_step"] for n, r in records.items()}
    print("resumed:", {r["trial"]["name"]: r["resumed_from_step"] for r in resumed})
