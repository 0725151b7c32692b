"""Throughput of the models package.

CPU (default): DiT training steps/s and sampling samples/s for the CPU presets on
(4, 8, 8) latents, with DiT-Micro/2 as the baseline; SDPA vs naive attention; the
vq-f4-c4 VQ-VAE training steps/s and encode images/s.
GPU (--gpu, needs CUDA): DiT-XL/2 (32x32x4 latents, 1000 classes) training steps/s at
batch 128 in bf16 autocast with SDPA, against naive attention measured in the same
run and against fast-DiT's published 0.84 steps/s on one A100.

    .venv/bin/python -m benchmarks.bench_models [--gpu] [--threads 1]
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import torch

from models import build_dit, build_vqvae, cfg_velocity_fn, sample_ode, training_loss
from models.vqvae import vqvae_train_step

FAST_DIT_A100_STEPS_PER_S = 0.84


def timed(fn: Callable[[], None], warmup: int, iters: int, sync: bool = False) -> float:
    """Seconds per call of fn after warmup calls."""
    for _ in range(warmup):
        fn()
    if sync:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    if sync:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def set_naive(model: torch.nn.Module, naive: bool) -> None:
    for blk in model.blocks:
        blk.attn.naive = naive


def dit_train_step_fn(model, x, y, gen, amp_dtype=None) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)

    def step() -> None:
        with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = training_loss(model, x, y, gen).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bench_cpu(iters: int) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, 8, 8, generator=gen)
    y = torch.randint(0, 10, (64,), generator=gen)
    rows = []
    for name in ("DiT-Micro/2", "DiT-Tiny/2"):
        for naive in (False, True):
            model = build_dit(name, 8, 4, num_classes=10)
            set_naive(model, naive)
            sec = timed(dit_train_step_fn(model, x, y, gen), 3, iters)
            model.eval()
            noise = torch.randn(250, 4, 8, 8, generator=gen)
            labels = torch.randint(0, 10, (250,), generator=gen)
            fn = cfg_velocity_fn(model, labels, 1.5)
            sample_sec = timed(lambda: sample_ode(fn, noise, 16, "heun"), 1, 2)
            rows.append((name, "naive" if naive else "sdpa", 1 / sec, 250 / sample_sec))
    base_steps, base_samples = rows[0][2], rows[0][3]
    print("| model | attention | train steps/s (B=64) | vs baseline | samples/s (Heun 16, CFG 1.5) "
          "| vs baseline |\n|---|---|---|---|---|---|")
    for name, attn, sps, smp in rows:
        print(f"| {name} | {attn} | {sps:.1f} | {sps / base_steps:.2f}x | {smp:.0f} "
              f"| {smp / base_samples:.2f}x |")
    print("baseline: DiT-Micro/2 with SDPA, measured in this run")
    n = 6000
    print(f"DiT-Micro/2 300 steps at B=64 on {n} latents: {300 / base_steps:.1f} s (one thread)")

    vq = build_vqvae("vq-f4-c4")
    imgs = torch.rand(64, 3, 32, 32, generator=gen) * 2 - 1
    opt = torch.optim.Adam(vq.parameters(), lr=2e-4)
    vq_sec = timed(lambda: vqvae_train_step(vq, imgs, opt), 2, max(iters // 5, 3))
    vq.eval()
    with torch.no_grad():
        enc_sec = timed(lambda: vq.encode(imgs), 2, max(iters // 5, 3))
    print(f"vq-f4-c4: {1 / vq_sec:.2f} train steps/s (B=64), {64 / enc_sec:.0f} images/s encode; "
          f"600-step autoencoder fit: {600 * vq_sec:.0f} s")


def bench_gpu(iters: int) -> None:
    if not torch.cuda.is_available():
        print("--gpu: CUDA not available, nothing measured")
        return
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(128, 4, 32, 32, device=dev, generator=gen)
    y = torch.randint(0, 1000, (128,), device=dev, generator=gen)
    torch.backends.cuda.matmul.allow_tf32 = True
    results = {}
    for naive in (False, True):
        model = build_dit("DiT-XL/2", 32, 4, num_classes=1000).to(dev)
        set_naive(model, naive)
        sec = timed(dit_train_step_fn(model, x, y, gen, torch.bfloat16), 3, iters, sync=True)
        results["naive" if naive else "sdpa"] = 1 / sec
        print(f"DiT-XL/2 B=128 bf16 {'naive' if naive else 'SDPA'}: {1 / sec:.2f} steps/s, "
              f"peak mem {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)
        del model
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    print(f"device: {torch.cuda.get_device_name()}")
    print(f"SDPA vs naive attention (same run): {results['sdpa'] / results['naive']:.2f}x")
    print(f"SDPA vs fast-DiT's published A100 {FAST_DIT_A100_STEPS_PER_S} steps/s: "
          f"{results['sdpa'] / FAST_DIT_A100_STEPS_PER_S:.2f}x (different card; reference only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="DiT-XL/2 on CUDA")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.gpu:
        bench_gpu(args.iters)
    else:
        bench_cpu(args.iters)


if __name__ == "__main__":
    main()
