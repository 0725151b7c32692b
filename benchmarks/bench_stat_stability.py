"""Benchmark: split-half stability of the proxy statistics (EL2N, GraNd, MoSo, monotonicity).

The split-half rank correlation of a statistic is the Spearman correlation between
its scores from two disjoint sets of K draws (draw seeds 0 and 1: other grid offset
or t, other noise), measured on the same proxy checkpoints. It is measured for the
draws of ``pruning.stats.fixed_draws``:

- ``per_sample``: every sample draws its own K values of t (the former default);
- ``shared_grid``: t on a stratified grid t_j = (j + u) / K shared by every sample,
  noise per (seed, id) (the default now);
- ``shared_grid+shared_noise`` (``--shared-noise``): the grid, and ``noise="shared"``:
  one noise per draw shared by every sample (a function of the draw seed only), so
  every sample is ranked under identical (t, noise) draws.

Data: the quickstart's (experiments/quickstart.yaml: Fashion-MNIST train, limit 3000,
32x32), encoded by a VQ-VAE trained with the quickstart autoencoder recipe
(``--vqvae-steps``, default the config's; the latents are cached in /tmp between
runs). The proxy DiT is trained once by ``orchestrator.proxy.train_proxy`` with the
config's proxy section (Ray-free, no statistics recorded); its weights at the log
points feed every variant. Costs: seconds of the statistics passes (one draw seed)
and of the whole proxy stage (training + those passes), and the ratio of the whole
proxy against the former default (per_sample, K = 2) measured in the same run.

    .venv/bin/python -m benchmarks.bench_stat_stability [--ks 1,2,4,8] [--shared-noise 2,3,4]
        [--vqvae-steps 500] [--subset 1000] [--draw-seeds 0,1]
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

# Project imports in one place (orchestrator modules are being moved into packages).
from benchmarks._util import REPO, header
from models import build_dit
from models.transport import per_sample_flow_loss
from models.vqvae import build_vqvae, fit_latent_scale, vqvae_train_step
from orchestrator.config import load_config
from models.vqvae import images_to_model as _to_model_input
from orchestrator.training.proxy_stats import checkpoint_steps, train_proxy
from orchestrator.data.sources import load_arrays
from pruning import stats as st
from pruning.monotonicity import increase_fraction

STATS = ("el2n", "grand", "moso", "monotonicity", "grand_meangrad")
DRAW_SEEDS = (0, 1)


def encode_quickstart(cfg: Any, vq_steps: int, cache_dir: str) -> dict[str, np.ndarray]:
    """Quickstart images -> VQ-VAE latents (trained here with the config's recipe), cached."""
    ds = cfg.data.datasets[0]
    arrays = load_arrays(ds)
    ae = cfg.autoencoder
    path = os.path.join(cache_dir, f"pd_stat_latents_{arrays.fingerprint[:12]}_{ae.preset}_"
                                   f"{vq_steps}_{ae.batch_size}_{ae.lr}_{ds.seed}.npz")
    if os.path.exists(path):
        print(f"latents: cached {path}", flush=True)
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    t0 = time.perf_counter()
    torch.manual_seed(ds.seed)
    model = build_vqvae(ae.preset)
    opt = torch.optim.Adam(model.parameters(), lr=ae.lr)
    rng = np.random.default_rng(ds.seed)
    n, step = len(arrays.ids), 0
    while step < vq_steps:
        perm = rng.permutation(n)
        for s in range(0, n - ae.batch_size + 1, ae.batch_size):
            if step >= vq_steps:
                break
            vqvae_train_step(model, _to_model_input(arrays.images[perm[s:s + ae.batch_size]]), opt)
            step += 1
    with torch.no_grad():
        fit_latent_scale(model, _to_model_input(arrays.images[perm[-512:]]))
        model.eval()
        lat = torch.cat([model.encode(_to_model_input(arrays.images[s:s + 256]))
                         for s in range(0, n, 256)]).float().numpy()
    out = {"ids": arrays.ids, "labels": arrays.labels, "latents": lat}
    np.savez(path, **out)
    print(f"latents: {vq_steps} VQ-VAE steps + encode in {time.perf_counter() - t0:.1f} s "
          f"-> {lat.shape} ({path})", flush=True)
    return out


def train_proxy_checkpoints(pcfg: dict, data: dict, num_classes: int) -> tuple[dict, float, float]:
    """Train the proxy once (no statistics): weights at every checkpoint step, wall and CPU s."""
    weights: dict[int, dict[str, torch.Tensor]] = {}

    def save(state: dict, step: int, loss: float) -> None:
        weights[step] = {k: v.detach().clone() for k, v in state["model"].items()}

    cfg = {**pcfg, "stats": [], "n": len(data["ids"]), "num_classes": num_classes}
    t0, c0 = time.perf_counter(), time.process_time()
    train_proxy(cfg, data, 0, 1, torch.device("cpu"), lambda m: m, None, save)
    return weights, time.perf_counter() - t0, time.process_time() - c0


def measure(model: Any, data: dict, pcfg: dict, weights: dict, k: int, seed: int,
            t_mode: str, noise: str, rows: np.ndarray, grand_k: int | None = None,
            grand_only: tuple[str, ...] | None = None, el2n_k: int | None = None,
            ) -> tuple[dict[str, np.ndarray], float, float]:
    """The proxy's statistics at K draws of one draw seed (as orchestrator.training.proxy_stats.measure_stats).

    Args:
        rows: (M,) positions measured (MoSo's mean gradient is over these M samples).
        grand_k, grand_only: GraNd's draws (default K) and gradient parameters (default
            all; ``DiT.OUTPUT_LAYER`` = proxy.grand_params "output").
        el2n_k: EL2N's draws at the last step (proxy.el2n_draws; default K).

    Returns:
        ({stat: (M,) scores}, wall seconds, CPU seconds of the statistics passes).
    """
    x = torch.from_numpy(data["latents"][rows].astype(np.float32))
    y = torch.from_numpy(data["labels"][rows].astype(np.int64)) if pcfg["conditional"] else None
    ids = torch.from_numpy(data["ids"][rows].astype(np.int64))
    chunk, n = pcfg["chunk"], x.shape[0]
    bs = max(chunk, 256)
    parts = [(x[s:s + bs], None if y is None else y[s:s + bs], ids[s:s + bs]) for s in range(0, n, bs)]
    log_at = checkpoint_steps(pcfg["steps"], pcfg["log_points"])
    grad_at = checkpoint_steps(pcfg["steps"], pcfg["grad_checkpoints"])
    loss_fn, out = per_sample_flow_loss, {}
    t0, c0 = time.perf_counter(), time.process_time()
    traj, grand, moso, meangrad = [], [], [], []
    for step in sorted(set(log_at) | set(grad_at)):
        model.load_state_dict(weights[step])
        if step in log_at:
            traj.append(torch.cat([st.per_sample_losses(model, loss_fn, xb, yb, ib, k, seed, t_mode,
                                                        noise) for xb, yb, ib in parts]).numpy())
        if step in grad_at:
            grand.append(torch.cat([st.per_sample_grad_norms(model, loss_fn, xb, yb, ib,
                                                             grand_k or k, seed, chunk, t_mode,
                                                             noise, only=grand_only)
                                    for xb, yb, ib in parts]).numpy())
            g_mean = sum(st.gradient_sum(model, loss_fn, xb, yb, ib, k, seed, chunk, t_mode,
                                         noise) for xb, yb, ib in parts) / n
            sq, dots = zip(*[st.moso_terms(model, loss_fn, xb, yb, ib, k, seed, g_mean, chunk, t_mode,
                                           noise)
                             for xb, yb, ib in parts])
            moso.append(st.moso_scores(n, g_mean, torch.cat(sq), torch.cat(dots)))
            meangrad.append(torch.cat(sq).sqrt().numpy())
    traj_a = np.stack(traj, axis=1)
    el2n = traj_a[:, -1]
    if el2n_k is not None:   # the proxy's loss_last: el2n_k draws at the last step
        model.load_state_dict(weights[pcfg["steps"]])
        el2n = torch.cat([st.per_sample_losses(model, loss_fn, xb, yb, ib, el2n_k, seed, t_mode,
                                               noise) for xb, yb, ib in parts]).numpy()
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {"el2n": el2n, "monotonicity": increase_fraction(traj_a),
           "grand": np.stack(grand, 1)[:, -1], "moso": np.stack(moso, 1).mean(axis=1),
           "grand_meangrad": np.stack(meangrad, 1)[:, -1]}
    return out, secs, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.path.join(REPO, "experiments", "quickstart.yaml"))
    parser.add_argument("--ks", default="1,2,4,8", help="K values of the shared grid (after)")
    parser.add_argument("--before-ks", default="2,4", help="K values of per-sample t (before)")
    parser.add_argument("--shared-noise", default="2", help="K values of the shared-noise variant")
    parser.add_argument("--grand-output", default="",
                        help="GraNd (output layer) and EL2N draw counts of the proxy's default "
                             "variant (shared grid and noise, K = proxy.draws for the other "
                             "statistics), e.g. 12")
    parser.add_argument("--vqvae-steps", type=int, default=None, help="default: the config's")
    parser.add_argument("--subset", type=int, default=0,
                        help="measure the statistics on M random samples (0 = all N); costs "
                             "are then also given scaled by N / M (every pass is per sample)")
    parser.add_argument("--draw-seeds", default="0,1",
                        help="the two draw seeds of the split halves (another pair: another "
                             "noise realisation, to see the spread of the split-half values)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", default="/tmp")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. data.datasets[0].limit=300 (smoke runs)")
    args = parser.parse_args()
    header("bench_stat_stability", vars(args))
    torch.set_num_threads(args.threads)
    draw_seeds = tuple(int(v) for v in args.draw_seeds.split(","))
    if len(draw_seeds) != 2 or draw_seeds[0] == draw_seeds[1]:
        parser.error(f"--draw-seeds: two different seeds, got {args.draw_seeds!r}")
    cfg = load_config(args.config, args.set)
    ds = cfg.data.datasets[0]
    vq_steps = cfg.autoencoder.train_steps if args.vqvae_steps is None else args.vqvae_steps
    data = encode_quickstart(cfg, vq_steps, args.cache_dir)
    n = len(data["ids"])
    num_classes = int(data["labels"].max()) + 1
    pcfg = {**asdict(cfg.proxy), "seed": ds.seed, "conditional": ds.conditional}
    weights, train_s, train_cpu = train_proxy_checkpoints(pcfg, data, num_classes)
    print(f"proxy training: {pcfg['steps']} steps on {n} latents in {train_s:.1f} s "
          f"({train_cpu:.1f} CPU s)", flush=True)
    c, h = data["latents"].shape[1:3]
    model = build_dit(pcfg["model"], input_size=h, in_channels=c,
                      num_classes=num_classes if ds.conditional else 0)
    m = n if args.subset <= 0 else min(args.subset, n)
    rows = np.sort(np.random.default_rng(12345).choice(n, m, replace=False))
    scale = n / m

    def ks(text: str) -> list[int]:
        return [int(v) for v in text.split(",") if v.strip()]

    from models.dit import DiT

    # (row label, t_mode, noise, K, GraNd K, GraNd params); the first row, the former
    # default, is the cost reference
    variants = ([("per_sample", "per_sample", "per_sample", 2, None, None)]
                + [("shared_grid", "shared_grid", "per_sample", k, None, None) for k in ks(args.ks)]
                + [("shared_grid+shared_noise", "shared_grid", "shared", k, None, None)
                   for k in ks(args.shared_noise)]
                + [(f"shared_grid+shared_noise, GraNd output layer and EL2N K={g}", "shared_grid",
                    "shared", pcfg["draws"], g, DiT.OUTPUT_LAYER) for g in ks(args.grand_output)]
                + [("per_sample", "per_sample", "per_sample", k, None, None)
                   for k in ks(args.before_ks) if k != 2])
    results = []
    for mode, t_mode, noise, k, grand_k, only in variants:
        halves, walls, cpus = [], [], []
        for seed in draw_seeds:
            scores, wall, cpu = measure(model, data, pcfg, weights, k, seed, t_mode, noise, rows,
                                        grand_k, only, grand_k)
            halves.append(scores)
            walls.append(wall)
            cpus.append(cpu)
        rho = {name: float(spearmanr(halves[0][name], halves[1][name])[0]) for name in STATS}
        results.append((mode, k, rho, float(np.mean(walls)), float(np.mean(cpus))))
        print(f"{mode} K={k}: " + "  ".join(f"{nm} {r:.3f}" for nm, r in rho.items())
              + f"  stats {np.mean(walls):.1f} s ({np.mean(cpus):.1f} CPU s) on {m}", flush=True)
        _table(results, train_s, train_cpu, scale, pcfg, n, m, vq_steps, draw_seeds)
    header("bench_stat_stability (end)", {})


def _table(results: list, train_s: float, train_cpu: float, scale: float, pcfg: dict, n: int,
           m: int, vq_steps: int, draw_seeds: tuple[int, int] = DRAW_SEEDS) -> None:
    """Markdown table of the rows so far; ratio of the whole proxy against per_sample K=2."""
    ref = results[0]
    ref_cpu = train_cpu + ref[4] * scale
    print(f"\nN = {n} (statistics on M = {m} random samples), proxy {pcfg['steps']} steps "
          f"(train {train_s:.1f} s wall, {train_cpu:.1f} CPU s), log_points {pcfg['log_points']}, "
          f"grad_checkpoints {pcfg['grad_checkpoints']}, chunk {pcfg['chunk']}, VQ-VAE steps "
          f"{vq_steps}. Split-half Spearman between draw seeds {draw_seeds}. stats = one draw "
          f"seed's passes on M; proxy CPU s = train + stats x N/M; ratio = proxy CPU s / "
          f"(per_sample, K=2)'s.")
    print("| t draws | K | EL2N | GraNd | MoSo | monotonicity | GraNd (norm of K-mean grad) "
          "| stats wall s | stats CPU s | proxy CPU s (N) | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode, k, rho, wall, cpu in results:
        total = train_cpu + cpu * scale
        print(f"| {mode} | {k} | {rho['el2n']:.3f} | {rho['grand']:.3f} | {rho['moso']:.3f} | "
              f"{rho['monotonicity']:.3f} | {rho['grand_meangrad']:.3f} | {wall:.1f} | {cpu:.1f} | "
              f"{total:.1f} | {total / ref_cpu:.2f} |", flush=True)


if __name__ == "__main__":
    main()
