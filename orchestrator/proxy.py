"""Proxy stage: one DDP proxy DiT run on all latents, recording per-sample statistics.

Only runs when a configured method's ``needs_stats`` asks, and records only the
statistics asked for (GraNd / MoSo gradient passes are the expensive ones):

- ``loss_traj`` (N, T): per-sample flow loss at ``log_points`` evenly spaced steps;
- ``grad_norm`` (N, G): per-sample gradient norm at ``grad_checkpoints`` steps;
- ``moso`` (N, G): MoSo score at the same steps (mean gradient all-reduced).

Each rank measures its stride of the dataset (positions ``rank::world``) and writes
its shard to the cache; the driver gathers the shards by position and caches the
merged arrays under a key of the latents, the proxy config and the stats set.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict
from typing import Any

import numpy as np

from orchestrator.cache import ArtifactCache
from orchestrator.ray_utils import say
from orchestrator.ray_utils import call_isolated, fit_only
from orchestrator.resources import ResourcePlan

PROXY_VERSION = 1
STAT_KEYS = ("loss_traj", "grad_norm", "moso")


def checkpoint_steps(steps: int, points: int) -> list[int]:
    """``points`` evenly spaced steps in (0, steps], the last one == steps."""
    return sorted({max(1, int(round(steps * (i + 1) / points))) for i in range(points)})


def needed_stats(cfg: Any) -> tuple[str, ...]:
    """Union of the configured methods' ``needs_stats``, in STAT_KEYS order."""
    from pruning import PRUNERS

    want = set()
    for m in cfg.pruning.methods:
        for ds in cfg.data.datasets:
            want.update(PRUNERS[m.name](**m.params_for(ds.name)).needs_stats)
    unknown = want - set(STAT_KEYS)
    if unknown:
        raise ValueError(f"pruning methods need unknown proxy statistics {sorted(unknown)}")
    return tuple(k for k in STAT_KEYS if k in want)


def _measure(cfg: dict, model: Any, x: Any, y: Any, ids: Any, stats: tuple[str, ...],
             which: str, world: int) -> dict[str, np.ndarray]:
    """One checkpoint's statistics for this rank's shard (batched)."""
    import torch

    from models.transport import per_sample_flow_loss as loss_fn
    from pruning import stats as st

    k, seed, chunk, n_total = cfg["draws"], cfg["seed"], cfg["chunk"], cfg["n"]
    bs = max(chunk, 256)
    parts = [(x[s:s + bs], None if y is None else y[s:s + bs], ids[s:s + bs])
             for s in range(0, x.shape[0], bs)]
    out: dict[str, np.ndarray] = {}
    if which == "log" and "loss_traj" in stats:
        out["loss_traj"] = torch.cat([st.per_sample_losses(model, loss_fn, xb, yb, ib, k, seed)
                                      for xb, yb, ib in parts]).cpu().numpy()
    if which == "grad" and "grad_norm" in stats:
        out["grad_norm"] = torch.cat([st.per_sample_grad_norms(model, loss_fn, xb, yb, ib, k, seed, chunk)
                                      for xb, yb, ib in parts]).cpu().numpy()
    if which == "grad" and "moso" in stats:
        g_sum = sum(st.gradient_sum(model, loss_fn, xb, yb, ib, k, seed, chunk) for xb, yb, ib in parts)
        if world > 1:
            import torch.distributed as dist

            dist.all_reduce(g_sum)
        g_mean = g_sum / n_total
        sq, dots = zip(*[st.moso_terms(model, loss_fn, xb, yb, ib, k, seed, g_mean, chunk)
                         for xb, yb, ib in parts])
        out["moso"] = st.moso_scores(n_total, g_mean, torch.cat(sq), torch.cat(dots))
    return out


def proxy_worker(cfg: dict) -> None:
    """Ray Train loop: train the proxy, record this rank's statistics into the cache."""
    import ray.train
    import ray.train.torch
    import torch
    from tqdm import tqdm

    from models import build_dit
    from models.transport import training_loss
    from orchestrator.train_loop import EpochBatches

    torch.set_num_threads(int(cfg["threads"]))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cache = ArtifactCache(cfg["cache_root"])
    arr = cache.load_arrays(cfg["latents_key"])
    device = ray.train.torch.get_device()
    x_all = torch.from_numpy(arr["latents"].astype(np.float32))
    y_all = torch.from_numpy(arr["labels"].astype(np.int64)) if cfg["conditional"] else None
    n, (c, h, _) = x_all.shape[0], x_all.shape[1:]
    pos = np.arange(rank, n, world)
    xs = x_all[pos].to(device)
    ys = y_all[pos].to(device) if y_all is not None else None
    ids = torch.from_numpy(arr["ids"][pos].astype(np.int64)).to(device)
    torch.manual_seed(cfg["seed"])  # identical initial weights on every rank (DDP also broadcasts)
    model = build_dit(cfg["model"], input_size=h, in_channels=c,
                      num_classes=cfg["num_classes"] if cfg["conditional"] else 0)
    model.label_generator = torch.Generator().manual_seed(cfg["seed"] * world + rank + 7_919)
    gen = torch.Generator().manual_seed(cfg["seed"] * world + rank)
    model = ray.train.torch.prepare_model(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"])
    log_at = set(checkpoint_steps(cfg["steps"], cfg["log_points"]))
    grad_at = set(checkpoint_steps(cfg["steps"], cfg["grad_checkpoints"]))
    batches = EpochBatches(n, cfg["batch_size"], cfg["seed"])
    rec: dict[str, list[np.ndarray]] = {k: [] for k in cfg["stats"]}
    for step in tqdm(range(cfg["steps"]), desc="proxy", disable=rank != 0, mininterval=15):
        idx = torch.from_numpy(batches.indices(step, rank, world))
        loss = training_loss(model, x_all[idx].to(device),
                             None if y_all is None else y_all[idx].to(device), generator=gen).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done = step + 1
        for which, at in (("log", log_at), ("grad", grad_at)):
            if done in at:
                for key, val in _measure(cfg, model, xs, ys, ids, tuple(cfg["stats"]), which, world).items():
                    rec[key].append(np.asarray(val, dtype=np.float64))
    shard = {k: np.stack(v, axis=1) for k, v in rec.items()}
    cache.save_arrays(cfg["shard_keys"][rank], positions=pos.astype(np.int64), **shard)
    from orchestrator.ray_utils import worker_pg_marker

    # A marker checkpoint: fit()'s Result carries the latest checkpoint's metrics.
    with tempfile.TemporaryDirectory() as d:
        ckpt = None
        if rank == 0:
            open(os.path.join(d, "done"), "w").close()
            ckpt = ray.train.Checkpoint.from_directory(d)
        ray.train.report({"step": cfg["steps"], "loss": float(loss.item()), **worker_pg_marker()},
                         checkpoint=ckpt)


def ensure_proxy_stats(cache: ArtifactCache, cfg: Any, ds_cfg: Any, latents_key: str,
                       num_classes: int, plan: ResourcePlan, fresh: bool) -> str | None:
    """Cache key of the merged statistics (arrays named by STAT_KEYS), or None if unneeded."""
    stats = needed_stats(cfg)
    if not stats:
        return None
    pc = asdict(cfg.proxy)
    key = cache.key("proxy", PROXY_VERSION, latents=latents_key, proxy=pc, stats=list(stats),
                    conditional=ds_cfg.conditional, seed=ds_cfg.seed)
    if not fresh and cache.has(key, "arrays"):
        say("proxy[%s]: statistics cached (%s)", ds_cfg.name, key)
        return key
    n = int(cache.load_arrays(latents_key)["ids"].shape[0])
    world = plan.num_workers
    shard_keys = [cache.key("proxyshard", PROXY_VERSION, proxy=key, rank=r, world=world)
                  for r in range(world)]
    say("proxy[%s]: %s on %d latents, %d step(s), stats %s", ds_cfg.name, cfg.proxy.model, n,
             cfg.proxy.steps, ", ".join(stats))
    wcfg = {**pc, "stats": list(stats), "n": n, "seed": ds_cfg.seed, "conditional": ds_cfg.conditional,
            "num_classes": num_classes, "cache_root": cache.root, "latents_key": latents_key,
            "shard_keys": shard_keys}
    call_isolated(fit_only, proxy_worker, wcfg, plan, f"proxy-{ds_cfg.name}-{key.split('/')[1][:10]}",
                  cfg.storage.ray_storage, cfg.resources.max_failures, solo=True)
    merged: dict[str, np.ndarray] = {}
    for sk in shard_keys:
        part = cache.load_arrays(sk)
        for name in stats:
            if name not in merged:
                merged[name] = np.zeros((n, part[name].shape[1]), dtype=np.float64)
            merged[name][part["positions"]] = part[name]
        cache.invalidate(sk, "arrays")
    cache.save_arrays(key, **merged)
    return key
