"""One sweep trial's model work on a GPU against the same machine's CPU.

A trial of the sweep trains a DiT on latents for a fixed number of steps with an
EMA copy, then samples with the EMA model (CFG, Heun). This times that work alone
(no Ray, no VQ decoding, no metrics) for two shapes:

- ``quickstart``: DiT-Micro/2 on (4, 8, 8) latents, batch 64, 600 steps, 250 samples
  with 16 Heun steps (experiments/quickstart.yaml);
- ``paper``: DiT-XL/2 on (4, 32, 32) latents, batch 256, bf16 autocast, 50 timed
  steps, 64 samples with 16 Heun steps (steps/s scales to the paper's step counts).

The baseline is the CPU of the same machine, all its threads, fp32, on the
quickstart shape (the paper shape is GPU only). Needs CUDA.

    python -m benchmarks.bench_gpu_trial [--cpu-steps 100]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from models import EMA, build_dit, cfg_velocity_fn, sample_ode, training_loss


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def train_steps(model: torch.nn.Module, ema: EMA, lat: torch.Tensor, y: torch.Tensor,
                steps: int, batch: int, amp: torch.dtype | None, gen: torch.Generator) -> float:
    """Seconds per training step (AdamW + EMA update) on random batches of lat (N, C, h, w)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    dev = lat.device
    t0 = 0.0
    for i in range(steps + 3):
        if i == 3:   # three warm-up steps (allocator, cuDNN / SDPA kernel choice)
            sync(dev)
            t0 = time.perf_counter()
        idx = torch.randint(len(lat), (batch,), device=dev, generator=gen)
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            loss = training_loss(model, lat[idx], y[idx], gen).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(model)
    sync(dev)
    return (time.perf_counter() - t0) / steps


@torch.no_grad()
def sample_seconds(model: torch.nn.Module, shape: tuple[int, ...], n: int, classes: int,
                   amp: torch.dtype | None, dev: torch.device) -> float:
    """Seconds to draw n samples (16 Heun steps, CFG 1.5) of the given latent shape."""
    gen = torch.Generator(device=dev).manual_seed(1)
    noise = torch.randn(n, *shape, device=dev, generator=gen)
    y = torch.randint(0, classes, (n,), device=dev, generator=gen)
    sync(dev)
    t0 = time.perf_counter()
    with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
        sample_ode(cfg_velocity_fn(model, y, 1.5), noise, 16, "heun")
    sync(dev)
    return time.perf_counter() - t0


def quickstart_trial(dev: torch.device, steps: int, timed_steps: int) -> float:
    """Projected seconds of a quickstart trial's model work on dev (fp32)."""
    gen = torch.Generator(device=dev).manual_seed(0)
    lat = torch.randn(3000, 4, 8, 8, device=dev, generator=gen)
    y = torch.randint(0, 10, (3000,), device=dev, generator=gen)
    model = build_dit("DiT-Micro/2", 8, 4, num_classes=10).to(dev)
    ema = EMA(model, 0.99)
    per_step = train_steps(model, ema, lat, y, timed_steps, 64, None, gen)
    samp = sample_seconds(ema.module, (4, 8, 8), 250, 10, None, dev)
    total = per_step * steps + samp
    print(f"quickstart trial on {dev.type}: {per_step * 1e3:.1f} ms/step, sampling 250 "
          f"{samp:.2f} s -> {total:.1f} s for {steps} steps + sampling", flush=True)
    return total


def paper_trial(dev: torch.device, timed_steps: int) -> None:
    """DiT-XL/2 steps/s at batch 256 in bf16 and sampling throughput."""
    torch.backends.cuda.matmul.allow_tf32 = True
    gen = torch.Generator(device=dev).manual_seed(0)
    lat = torch.randn(2048, 4, 32, 32, device=dev, generator=gen)
    y = torch.randint(0, 1000, (2048,), device=dev, generator=gen)
    model = build_dit("DiT-XL/2", 32, 4, num_classes=1000).to(dev)
    ema = EMA(model, 0.9999)
    per_step = train_steps(model, ema, lat, y, timed_steps, 256, torch.bfloat16, gen)
    samp = sample_seconds(ema.module, (4, 32, 32), 64, 1000, torch.bfloat16, dev)
    print(f"paper trial (DiT-XL/2, B=256, bf16, EMA): {1 / per_step:.2f} steps/s "
          f"({256 / per_step:.0f} img/s); 64 samples x 16 Heun steps with CFG: {samp:.2f} s; "
          f"peak mem {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB; 400k steps would take "
          f"{400_000 * per_step / 3600:.1f} h", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600, help="quickstart trial steps")
    ap.add_argument("--gpu-timed-steps", type=int, default=200)
    ap.add_argument("--cpu-steps", type=int, default=100, help="timed CPU steps (projected)")
    ap.add_argument("--paper-steps", type=int, default=50)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu_trial: CUDA not available, nothing measured")
        return
    print(f"device: {torch.cuda.get_device_name()}, CPU threads {torch.get_num_threads()} of "
          f"{os.cpu_count()}, torch {torch.__version__}", flush=True)
    cpu = quickstart_trial(torch.device("cpu"), args.steps, args.cpu_steps)
    gpu = quickstart_trial(torch.device("cuda"), args.steps, args.gpu_timed_steps)
    print(f"quickstart trial: GPU {gpu:.1f} s vs this machine's CPU {cpu:.1f} s "
          f"(baseline): {cpu / gpu:.1f}x", flush=True)
    paper_trial(torch.device("cuda"), args.paper_steps)


if __name__ == "__main__":
    main()
