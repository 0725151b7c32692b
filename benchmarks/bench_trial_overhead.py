"""Benchmark: per-trial overhead of Tune + Ray Train + MLflow on a ~60 s CPU trial.

The same DiT training work (``models.build_dit`` preset, flow-matching
``training_loss`` on seeded random latents shaped like the quickstart's, AdamW, EMA,
through the one DiT loop ``orchestrator.training.loop.train_steps``), a state save every
``--checkpoint-every`` steps) runs

(a) as a plain loop in this process (state saved with ``torch.save``);
(b) in the orchestrator's trial path: a Tune function trainable
    (``tune.with_resources(trial, {"CPU": plan.trial_cpus})``) that calls
    ``orchestrator.runtime.train.fit_torch`` (Ray Train V2 ``TorchTrainer``, gloo,
    ``TuneReportCallback``, health check 0.2 s), checkpoints via ``ray.train.report``,
    then the result is logged with ``orchestrator.tracking.MlflowReporter.log_trial``
    (sqlite store in a private /tmp dir);
(c) as (b) with 2 DDP workers (the plan for ``resources.num_workers: 2``);
(s) the sweep's single-worker path: the loop inside the Tune trainable itself
    (``orchestrator.runtime.tune.TuneRuntime``, ``runtime.trials.trial_resources``), no
    TorchTrainer; run in the same Ray session as (b), right after it.

Overhead = (b - a) / b, b = Tune wall + MLflow logging (target <= 10%). ``ray.init``
and the MLflow store's creation are once per sweep and are printed apart. Torch
threads per worker come from the quickstart's resource plan (a plain loop with the
same threads is the baseline).

    .venv/bin/python -m benchmarks.bench_trial_overhead [--target-s 60] [--steps N]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from typing import Any

import numpy as np

from benchmarks._util import REPO, header, private_ray, scratch_dir


def train_work(cfg: dict, runtime: Any = None) -> dict[str, float]:
    """The trial's training work through the one DiT loop (``training.loop.train_steps``),
    checkpointing through ``runtime`` every ``checkpoint_every`` steps (none without one);
    returns {"work_s", "loss", "steps"} (work_s: loop only)."""
    import torch

    from models.transport import EMA
    from orchestrator.training.loop import LocalRuntime, LoopSpec, build_model, train_steps, unwrap

    torch.set_num_threads(int(cfg["threads"]))
    rt = runtime or LocalRuntime(keep=False)
    rng = np.random.default_rng(cfg["seed"])
    x_all = torch.from_numpy(rng.standard_normal((cfg["n"], *cfg["latent_shape"]), dtype=np.float32))
    y_all = torch.from_numpy(rng.integers(0, 10, cfg["n"]).astype(np.int64))
    model, gen = build_model(cfg["model"], tuple(cfg["latent_shape"]), 10, cfg["seed"], rt.rank,
                             rt.world, init_seed=cfg["seed"])
    ema = EMA(model, 0.99)
    model = rt.prepare_model(model) if rt.world > 1 else model
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    last = {"loss": float("nan")}

    def checkpoint(done: int, loss: float) -> None:
        last["loss"] = loss
        if runtime is not None and (done % cfg["checkpoint_every"] == 0 or done == cfg["steps"]):
            inner = unwrap(model)
            files = {"state.pt": {"model": inner.state_dict(), "ema": ema.state_dict(),
                                  "opt": opt.state_dict(), "step": done}} if rt.rank == 0 else {}
            rt.save_checkpoint({"step": done}, files)

    t0 = time.perf_counter()
    train_steps(model, opt, x_all, y_all, gen, LoopSpec(cfg["steps"], cfg["batch_size"], cfg["seed"]),
                rt, ema=ema, hooks=[checkpoint])
    return {"work_s": time.perf_counter() - t0, "loss": last["loss"], "steps": cfg["steps"]}


class _DirRuntime:
    """Plain loop's runtime: rank 0 of 1, checkpoints written to ``directory`` (torch.save)."""

    def __init__(self, directory: str):
        import torch

        self.rank, self.world, self.device, self.dir = 0, 1, torch.device("cpu"), directory

    def prepare_model(self, model: Any) -> Any:
        return model

    def save_checkpoint(self, metrics: dict, files: dict) -> None:
        from orchestrator.training.loop import write_checkpoint_files

        write_checkpoint_files(self.dir, files)


def bench_worker(cfg: dict) -> None:
    """Ray Train worker: the same work, checkpoints through the trials' ``TrainRuntime``."""
    from orchestrator.runtime.train import TrainRuntime

    rt = TrainRuntime()
    out = train_work(cfg, rt)
    rt.finish({"work_s": out["work_s"], "loss": out["loss"]})


def bench_trial(config: dict) -> None:
    """Tune function trainable, as ``orchestrator.runtime.trials.tune_trial`` (returns nothing)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from orchestrator.runtime.resources import ResourcePlan
    from orchestrator.runtime.train import fit_torch

    plan = ResourcePlan(**config["plan"])
    fit_torch(bench_worker, config["work"], plan, config["name"], config["storage"], 0,
              callbacks=[TuneReportCallback()])


def bench_solo(config: dict) -> None:
    """Tune function trainable, as ``orchestrator.runtime.trials.solo_trial``: the loop here."""
    from orchestrator.runtime.tune import TuneRuntime

    rt = TuneRuntime(os.path.join(config["storage"], config["name"]))
    out = train_work(config["work"], rt)
    rt.finish({"work_s": out["work_s"], "loss": out["loss"]})


def run_tune_trial(work: dict, plan: Any, storage: str, name: str,
                   solo: bool = False) -> dict[str, float]:
    """Wall seconds of one Tune trial and the worker's own loop seconds."""
    from ray import tune

    from orchestrator.runtime.trials import trial_resources

    t0 = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(bench_solo, trial_resources(plan)) if solo
        else tune.with_resources(bench_trial, {"CPU": plan.trial_cpus}),
        param_space={"work": work, "plan": dataclasses.asdict(plan), "storage": storage, "name": name},
        tune_config=tune.TuneConfig(max_concurrent_trials=plan.max_concurrent_trials),
        run_config=tune.RunConfig(name=f"tune-{name}", storage_path=storage, verbose=0, log_to_file=False))
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    res = grid[0]
    if res.error:
        raise RuntimeError(f"trial {name} failed: {res.error}")
    return {"wall_s": wall, "work_s": float(res.metrics["work_s"]), "loss": float(res.metrics["loss"])}


def log_mlflow(reporter: Any, name: str, out: dict, work: dict) -> float:
    """Seconds to log one trial's result the way the report stage does."""
    t0 = time.perf_counter()
    from orchestrator.config import Trial
    from orchestrator.training.records import TrialFiles, TrialResult

    reporter.log_trial(TrialResult(
        key=f"bench/{name}", trial=Trial("random", name, 0.0, work["seed"]),
        params={"model": work["model"], "train_steps": work["steps"]},
        metrics={"loss": out["loss"], "work_s": out["work_s"]},
        loss_curve=[[work["steps"], out["loss"]]], timing={}, resumed_from_step=0, world_size=1,
        finished_at=time.time(), files=TrialFiles(grid="", manifest="")), files={})
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target-s", type=float, default=60.0, help="plain-loop seconds to size steps")
    p.add_argument("--steps", type=int, default=0, help="fixed steps (0 = calibrate to --target-s)")
    p.add_argument("--model", default="DiT-Micro/2")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--n", type=int, default=3000, help="latents in the training set")
    p.add_argument("--checkpoint-every", type=int, default=0, help="0 = steps // 3")
    p.add_argument("--skip-ddp", action="store_true")
    args = p.parse_args()
    header("bench_trial_overhead", vars(args))
    from orchestrator.config import load_config
    from orchestrator.runtime.cluster import current_plan
    from orchestrator.runtime.resources import describe, plan_resources

    cfg = load_config("experiments/quickstart.yaml", base_dir=REPO)
    plan1 = plan_resources(cfg.resources, {"CPU": float(os.cpu_count() or 1)})
    work = {"model": args.model, "batch_size": args.batch_size, "n": args.n, "seed": 0,
            "latent_shape": [4, 8, 8], "threads": plan1.torch_threads, "steps": args.steps}
    if not args.steps:
        calib = train_work({**work, "steps": 20})
        work["steps"] = max(30, int(args.target_s / (calib["work_s"] / 20)))
        print(f"calibration: {calib['work_s'] / 20 * 1000:.0f} ms/step -> {work['steps']} steps", flush=True)
    work["checkpoint_every"] = args.checkpoint_every or max(1, work["steps"] // 3)
    tmp = scratch_dir("trial_overhead")
    t0 = time.perf_counter()
    plain = train_work(work, _DirRuntime(tmp))
    plain["wall_s"] = time.perf_counter() - t0
    print(f"(a) plain loop: wall {plain['wall_s']:.1f}s (loop {plain['work_s']:.1f}s)", flush=True)
    from orchestrator.tracking import MlflowReporter

    t0 = time.perf_counter()
    reporter = MlflowReporter(f"sqlite:///{tmp}/mlflow.db", "bench", f"{tmp}/mlartifacts", "bench",
                              "bench-sweep")
    t_mlflow_setup = time.perf_counter() - t0
    res: dict[str, dict] = {}
    runs = [("1 worker", cfg.resources)]
    if not args.skip_ddp:
        runs.append(("2 workers DDP", dataclasses.replace(cfg.resources, num_workers=2)))
    for label, rcfg in runs:
        # A fresh Ray per configuration: what one Tune run leaves behind (printed
        # below; this trial path has no placement-group release callback) cannot
        # starve the next one.
        t0 = time.perf_counter()
        with private_ray(tmp) as ray:
            t_init = time.perf_counter() - t0
            plan = current_plan(rcfg)
            w = {**work, "threads": plan.torch_threads}
            paths = [(label, False)] + ([("1 worker, solo Tune trial", True)]
                                        if rcfg.num_workers == 1 else [])
            for name, solo in paths:
                out = run_tune_trial(w, plan, os.path.join(tmp, "ray_results"),
                                     name.split()[0] + ("s" if solo else "w"), solo=solo)
                out["mlflow_s"] = log_mlflow(reporter, name.replace(" ", "_").replace(",", ""), out, w)
                out["plan"] = describe(plan)
                res[name] = out
                print(f"(b) {name}: tune wall {out['wall_s']:.1f}s (worker loop {out['work_s']:.1f}s), "
                      f"mlflow {out['mlflow_s']:.2f}s; ray.init {t_init:.1f}s; {out['plan']}", flush=True)
                time.sleep(2.0)
                print(f"    CPUs free after the trial: {ray.available_resources().get('CPU', 0):.2f} "
                      f"of {ray.cluster_resources().get('CPU', 0):.2f}", flush=True)
    steps = work["steps"]
    print(f"\n{args.model}, {steps} steps x batch {args.batch_size}, latents (4, 8, 8), "
          f"{plan1.torch_threads} torch thread(s)/worker; ray.init {t_init:.1f}s and MLflow store "
          f"creation {t_mlflow_setup:.1f}s are per sweep, not counted\n")
    one = res["1 worker"]
    b = one["wall_s"] + one["mlflow_s"]
    # The loop's own speed moves with the machine's load; "fixed" (wall minus the
    # worker's own loop seconds) is the machinery alone.
    print("| path | wall (s) | train loop (s) | steps/s (loop) | overhead (b - a) / b "
          "| fixed = wall - loop (s) | fixed / wall |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| (a) plain in-process loop (baseline) | {plain['wall_s']:.1f} | {plain['work_s']:.1f} | "
          f"{steps / plain['work_s']:.2f} | - | {plain['wall_s'] - plain['work_s']:.1f} | - |")
    for label, out in res.items():
        wall = out["wall_s"] + out["mlflow_s"]
        fixed = wall - out["work_s"]
        path = "(s) Tune, loop in the trainable" if "solo" in label else f"(b) Tune + Train ({label})"
        print(f"| {path} + MLflow | {wall:.1f} | {out['work_s']:.1f} | "
              f"{steps / out['work_s']:.2f} | {(wall - plain['wall_s']) / wall:.1%} | {fixed:.1f} "
              f"| {fixed / wall:.1%} |")
    if "2 workers DDP" in res:
        two = res["2 workers DDP"]
        print(f"\nDDP 2 workers vs 1 worker: steps/s {one['work_s'] / two['work_s']:.2f}x, "
              f"wall {one['wall_s'] / two['wall_s']:.2f}x (speed-up, >1 = DDP faster)")
    print(f"1 worker: (b) - (a) = {b - plain['wall_s']:.1f}s; trial seconds for a fixed cost "
          f"<= 10%: {10 * (b - one['work_s']):.0f}s")


if __name__ == "__main__":
    main()
