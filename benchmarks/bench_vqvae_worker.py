"""Benchmark: the encode stage's VQ-VAE training, in a Ray Train worker and in one Ray
task, against the same model trained in this process, in one run (issue 13).

1. ``in-process``: ``models.vqvae.vqvae_train_step`` on the config's images (batch,
   lr, preset of ``autoencoder``), 2 threads, seeded batches drawn from memory: the
   model's own speed on this host (the baseline).
2. ``train``: the stage's Ray Train path (``TorchTrainer``, one worker, the plan's solo
   threads, in-memory batches) on a private local Ray; ``single``: the stage's path for
   a small dataset with one worker (``encode.train_vqvae``: one Ray task, no Ray Train).
   Each times its step loop (``train_s``); the rest of the call's wall is the run's
   start-up, latent scale and save.
3. ``--profile``: the share of the in-process step spent in convolutions (torch
   profiler, 10 steps), and steps/s with ``channels_last`` weights and inputs.

    .venv/bin/python -m benchmarks.bench_vqvae_worker [--steps 200] [--profile]
        [--config experiments/quickstart.yaml] [--no-ray]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np
import torch

from benchmarks._util import header, private_ray, scratch_dir


def in_process_rate(images: np.ndarray, preset: str, steps: int, batch_size: int, lr: float,
                    channels_last: bool = False, seed: int = 0) -> float:
    """Steps/s of ``steps`` VQ-VAE training steps in this process on (N, H, W, 3) uint8
    ``images`` (batches drawn with replacement from a seeded generator; 3 warm-up steps)."""
    from models.vqvae import build_vqvae, images_to_model, vqvae_train_step

    torch.manual_seed(seed)
    model = build_vqvae(preset)
    data = images_to_model(images)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        data = data.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)

    def step() -> None:
        idx = torch.randint(0, len(data), (batch_size,), generator=gen)
        vqvae_train_step(model, data[idx], opt)

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - t0)


def conv_share(preset: str, batch_size: int, steps: int = 10) -> float:
    """Fraction of the self CPU time of ``steps`` training steps (random (B, 3, 32, 32)
    inputs) spent in forward and backward convolutions (torch profiler)."""
    from torch.profiler import ProfilerActivity, profile

    from models.vqvae import build_vqvae, vqvae_train_step

    torch.manual_seed(0)
    model = build_vqvae(preset)
    x = torch.rand(batch_size, 3, 32, 32) * 2 - 1
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        vqvae_train_step(model, x, opt)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            vqvae_train_step(model, x, opt)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events
               if e.key in ("aten::convolution_backward", "aten::mkldnn_convolution",
                            "aten::_convolution", "aten::thnn_conv2d"))
    return conv / total if total else float("nan")


PATHS = {"train": "Ray Train worker (DDP path, world 1)",
         "single": "one Ray task (train_vqvae_single)"}


def cpu_seconds_by_process() -> dict[tuple[int, str], float]:
    """(pid, command line's first 60 characters) -> user + system CPU seconds of every
    process now (Linux ``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:     # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()    # after "pid (comm) "
        name = cmd[:60] or stat[stat.index("(") + 1:stat.rindex(")")]
        out[(int(entry), name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def worker_run(cfg: Any, path: str) -> dict[str, Any]:
    """The stage's VQ-VAE training on a private local Ray, ``path`` "train" (the Ray Train
    worker, ``runtime.vqvae.fit_vqvae``) or "single" (``encode.train_vqvae``: one Ray task);
    returns its metrics plus ``wall_s`` and ``cpu_by_process``: CPU seconds each process
    still alive after the call spent during it, largest first."""
    from orchestrator.runtime.cluster import current_plan
    from orchestrator.runtime.ray_executor import RayExecutor
    from orchestrator.runtime.ray_sources import load_dataset
    from orchestrator.runtime.train import call_isolated
    from orchestrator.runtime.vqvae import fit_vqvae
    from orchestrator.stages.encode import train_vqvae, vqvae_key
    from orchestrator.storage.cache import ArtifactCache

    ds, ae = cfg.data.datasets[0], cfg.autoencoder
    with private_ray(scratch_dir("vqworker_ray")):
        source = load_dataset(ds)
        cache = ArtifactCache(scratch_dir("vqworker_cache"))
        plan = current_plan(cfg.resources)
        key = vqvae_key(cache, cfg, source.fingerprint, ds.seed)
        before, t0 = cpu_seconds_by_process(), time.perf_counter()
        if path == "single":
            metrics = train_vqvae(cache, cfg, source, ds, RayExecutor(plan), key)
        else:
            ae_cfg = {"preset": ae.preset, "steps": ae.train_steps, "batch_size": ae.batch_size,
                      "lr": ae.lr, "seed": ds.seed, "in_memory": True}
            metrics = call_isolated(fit_vqvae, ae_cfg, plan, "vqvae-bench",
                                    cfg.storage.ray_storage, 0, source.dataset.materialize(),
                                    cache.root, key)
        wall, after = time.perf_counter() - t0, cpu_seconds_by_process()
        used = sorted(((after[k] - before.get(k, 0.0), k[1]) for k in after), reverse=True)
        return {**metrics, "wall_s": wall, "cpu_by_process": [u for u in used if u[0] > 0.5]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="experiments/quickstart.yaml")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2, help="in-process torch threads")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray Train worker run")
    args = ap.parse_args()
    header("bench_vqvae_worker", vars(args))
    from orchestrator.config.loader import load_config
    from orchestrator.data.sources import load_arrays

    out = scratch_dir("vqworker")
    cfg = load_config(args.config, [f"experiment.output_dir={out}",
                                    f"autoencoder.train_steps={args.steps}"])
    ae, ds = cfg.autoencoder, cfg.data.datasets[0]
    images = load_arrays(ds).images
    torch.set_num_threads(args.threads)
    base = in_process_rate(images, ae.preset, args.steps, ae.batch_size, ae.lr)
    print(f"in-process ({args.threads} threads): {base:.2f} steps/s "
          f"({ae.preset}, batch {ae.batch_size}, {len(images)} images)", flush=True)
    if args.profile:
        cl = in_process_rate(images, ae.preset, max(20, args.steps // 4), ae.batch_size, ae.lr,
                             channels_last=True)
        print(f"channels_last: {cl:.2f} steps/s ({cl / base:.2f}x the baseline)")
        print(f"convolutions: {conv_share(ae.preset, ae.batch_size):.0%} of a step's CPU time")
    if args.no_ray:
        return
    runs = {path: worker_run(cfg, path) for path in ("train", "single")}
    # the host's speed drifts: the baseline again after the runs, against their mean
    after = in_process_rate(images, ae.preset, args.steps, ae.batch_size, ae.lr)
    print(f"in-process again: {after:.2f} steps/s", flush=True)
    ref = (base + after) / 2
    for path, m in runs.items():
        rate = args.steps / m["train_s"]
        print(f"{PATHS[path]}: {rate:.2f} steps/s in its loop ({rate / ref:.2f}x the mean "
              f"in-process rate); {m['wall_s']:.1f} s for the call, "
              f"{m['wall_s'] - m['train_s']:.1f} s of it start-up, latent scale and save")
        print("  CPU seconds during the call, by process (> 0.5 s, alive after it):")
        for sec, name in m["cpu_by_process"][:10]:
            print(f"  {sec:7.1f}  {name}")
    single, train = runs["single"], runs["train"]
    print(f"single task vs Ray Train worker: {train['wall_s'] / single['wall_s']:.2f}x "
          f"faster for the call, {train['train_s'] / single['train_s']:.2f}x for the loop")

if __name__ == "__main__":
    main()
