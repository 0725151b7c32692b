"""Benchmark: the orchestrator's fixed costs on this machine.

1. Per-trial fixed cost of the sweep machinery (Tune function trainable -> Ray Train
   V2 ``TorchTrainer`` -> one worker reporting once), with the resource plan the
   pipeline uses, with Ray Train's default 2 s health-check interval and with the
   0.2 s the pipeline sets. Reported as seconds per trial (wall) at the plan's
   concurrency.
2. Ray Data actor-pool throughput of the encode/embed path (``map_batches`` with a
   callable class, fractional CPUs) against a plain loop over the same batches.

Wall seconds include other processes' load on a shared machine: compare numbers
taken in one run.

    .venv/bin/python -m benchmarks.bench_orchestrator [--trials 6] [--images 4000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np


def _noop_worker(config: dict) -> None:
    import ray.train

    ray.train.report({"finished": 1})


def _noop_trial(config: dict) -> None:
    from ray.tune.integration.ray_train import TuneReportCallback

    from orchestrator.runtime.resources import ResourcePlan
    from orchestrator.runtime.train import fit_torch

    fit_torch(_noop_worker, {}, ResourcePlan(**config["plan"]), f"noop-{config['i']}",
              config["storage"], 0, callbacks=[TuneReportCallback()])


def bench_trials(n: int, storage: str) -> float:
    """Wall seconds per trial of n no-op trials at the planned concurrency."""
    from dataclasses import asdict

    import ray
    from ray import tune

    from orchestrator.runtime.cluster import current_plan

    plan = current_plan(SimpleNamespace(num_workers=1, use_gpu=False, cpus_per_worker="auto",
                                        gpus_per_actor=0.0, actor_pool_size=1,
                                        max_concurrent_trials="auto", max_failures=0))
    t0 = time.time()
    tuner = tune.Tuner(tune.with_resources(_noop_trial, {"CPU": plan.trial_cpus}),
                       param_space={"i": tune.grid_search(list(range(n))), "plan": asdict(plan),
                                    "storage": storage},
                       tune_config=tune.TuneConfig(max_concurrent_trials=plan.max_concurrent_trials),
                       run_config=tune.RunConfig(storage_path=storage, verbose=0))
    tuner.fit()
    assert ray.is_initialized()
    return (time.time() - t0) / n


class _Scale:
    def __init__(self, threads: int):
        import torch

        torch.set_num_threads(threads)

    def __call__(self, batch: dict) -> dict:
        import torch

        x = torch.as_tensor(batch["image"]).float().permute(0, 3, 1, 2)
        y = torch.nn.functional.avg_pool2d(x, 2).flatten(1)
        return {"id": batch["id"], "features": y.numpy()}


def bench_actor_pool(n_images: int) -> tuple[float, float]:
    """(images/s through the Ray Data actor pool, images/s of a plain loop)."""
    import ray

    from orchestrator.runtime.cluster import collect_by_id, current_plan, map_actor_pool

    plan = current_plan(SimpleNamespace(num_workers=1, use_gpu=False, cpus_per_worker="auto",
                                        gpus_per_actor=0.0, actor_pool_size=1,
                                        max_concurrent_trials="auto", max_failures=0))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_images, 32, 32, 3), dtype=np.uint8)
    ds = ray.data.from_numpy(images).map_batches(
        lambda b: {"id": np.arange(len(b["data"])), "image": b["data"]}, batch_size=None)
    ds = ds.materialize()
    t0 = time.time()
    cols = collect_by_id(map_actor_pool(ds, _Scale, {"threads": plan.actor_threads}, plan, 256),
                         ["features"])
    pool = n_images / (time.time() - t0)
    assert len(cols["features"]) == n_images
    f = _Scale(plan.actor_threads)
    t0 = time.time()
    for s in range(0, n_images, 256):
        f({"id": np.arange(256), "image": images[s:s + 256]})
    return pool, n_images / (time.time() - t0)


def _child(mode: str, n: int, storage: str) -> None:
    import ray

    if mode == "default":
        os.environ.pop("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", None)
    else:
        os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.2"
    ray.init(logging_level="ERROR")
    try:
        print(f"RESULT {bench_trials(n, storage):.2f}")
    finally:
        ray.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--images", type=int, default=4000)
    p.add_argument("--child", choices=["default", "fast"])
    p.add_argument("--storage", default=f"/tmp/bench_orchestrator_{os.getpid()}")
    args = p.parse_args()
    if args.child:
        _child(args.child, args.trials, args.storage)
        return
    print(f"# bench_orchestrator  {time.strftime('%Y-%m-%d %H:%M')}  {os.cpu_count()} CPUs  "
          f"load {os.getloadavg()[0]:.1f}")
    for mode in ("default", "fast"):
        # A fresh process each: the health-check interval is read when Ray Train starts.
        env = dict(os.environ)
        env.pop("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", None)
        out = subprocess.run([sys.executable, "-m", "benchmarks.bench_orchestrator", "--child", mode,
                              "--trials", str(args.trials), "--storage", f"{args.storage}_{mode}"],
                             capture_output=True, text=True, env=env)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")]
        value = line[0].split()[1] if line else f"failed: {out.stderr.strip().splitlines()[-1:]}"
        label = "2 s (Ray default)" if mode == "default" else "0.2 s (pipeline)"
        print(f"trial fixed cost, health check {label}: {value} s/trial "
              f"({args.trials} no-op trials, planned concurrency)")
    import ray

    ray.init(logging_level="ERROR")
    try:
        pool, loop = bench_actor_pool(args.images)
    finally:
        ray.shutdown()
    print(f"actor pool map_batches: {pool:.0f} img/s; plain loop: {loop:.0f} img/s "
          f"({args.images} images 32x32)")


if __name__ == "__main__":
    main()
