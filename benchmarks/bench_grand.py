"""Benchmark: GraNd per-sample gradient norms, torch.func vmap vs a batch-size-1 loop.

Model: models.build_dit("DiT-Micro/2") (class-conditional, 10 classes) on
(4, 8, 8) latents, the quickstart proxy; loss: models.transport.per_sample_flow_loss.
Baseline: a Python loop over samples, each a batch-size-1 forward + autograd.grad
over all trainable parameters (the paper's released approach). Both use the same
fixed per-id (t, noise) draws; scores must agree to rtol 1e-4.

    .venv/bin/python -m benchmarks.bench_grand [--n 128] [--repeats 3] [--k 2] [--chunk 64]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from models import build_dit
from models.transport import per_sample_flow_loss
from pruning import stats


def loop_grad_norms(model, x, y, ids, k: int, seed: int) -> np.ndarray:
    """Baseline: batch-size-1 autograd, mean over K draws of the gradient norm."""
    model.eval()
    t, noise = stats.fixed_draws(ids, k, tuple(x.shape[1:]), seed)
    params = [p for p in model.parameters() if p.requires_grad]
    out = np.zeros(len(ids))
    for i in range(len(ids)):
        for j in range(k):
            loss = per_sample_flow_loss(model, x[i : i + 1], y[i : i + 1], t[i, j : j + 1],
                                        noise[i, j : j + 1])[0]
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            # One flattened vector and one norm, as the paper's scoring code does.
            flat = torch.cat([g.reshape(-1) for g in grads if g is not None])
            out[i] += float(torch.linalg.vector_norm(flat.double())) / k
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--model", default="DiT-Micro/2")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(0)
    model = build_dit(args.model, input_size=8, in_channels=4, num_classes=10).to(args.device)
    with torch.no_grad():  # DiT zero-inits its output layers: perturb like a trained proxy
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen).to(p.device))
    x = torch.randn(args.n, 4, 8, 8, generator=gen).to(args.device)
    y = torch.randint(0, 10, (args.n,), generator=gen).to(args.device)
    ids = torch.arange(args.n, device=args.device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}, device {args.device}; {args.model} {n_params:,} params; "
          f"N={args.n}, K={args.k}, chunk={args.chunk}")

    stats.per_sample_grad_norms(model, per_sample_flow_loss, x[:4], y[:4], ids[:4], 1, 0, 4)  # warm-up
    t_ours, t_loop = [], []
    for _ in range(args.repeats):  # interleaved; min over repeats resists CPU contention
        t0 = time.perf_counter()
        ours = stats.per_sample_grad_norms(model, per_sample_flow_loss, x, y, ids, args.k, 0,
                                           args.chunk)
        if args.device == "cuda":
            torch.cuda.synchronize()
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = loop_grad_norms(model, x, y, ids, args.k, 0)
        t_loop.append(time.perf_counter() - t0)
    print(f"times vmap {[round(t, 2) for t in t_ours]} loop {[round(t, 2) for t in t_loop]}")
    t_ours, t_loop = min(t_ours), min(t_loop)
    err = float(np.max(np.abs(ours.cpu().numpy() - ref) / np.abs(ref)))
    np.testing.assert_allclose(ours.cpu().numpy(), ref, rtol=1e-4)
    print(f"baseline = batch-size-1 autograd loop: min {t_loop:.2f}s "
          f"({args.n * args.k / t_loop:.0f} grads/s)")
    print(f"vmap (pruning.stats.per_sample_grad_norms): min {t_ours:.2f}s "
          f"({args.n * args.k / t_ours:.0f} grads/s)")
    print(f"speedup (loop / vmap): {t_loop / t_ours:.2f}x; max relative score difference {err:.1e}")


if __name__ == "__main__":
    main()
