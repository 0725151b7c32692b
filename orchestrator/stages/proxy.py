"""Proxy stage: one DDP proxy DiT run on all latents, recording per-sample statistics.

Only runs when a configured method's ``needs_stats`` asks, and records only the
statistics asked for (GraNd / MoSo gradient passes are the expensive ones):

- ``loss_traj`` (N, T): per-sample flow loss at ``log_points`` evenly spaced steps;
- ``grad_norm`` (N, G): per-sample gradient norm at ``grad_checkpoints`` steps;
- ``moso`` (N, G): MoSo score at the same steps (mean gradient all-reduced).

Each rank measures its stride of the dataset (positions ``rank::world``) and writes
its shard to the cache; the driver gathers the shards by position and caches the
merged arrays under a key of the latents, the proxy config and the stats set.

Resume: like a sweep trial, the proxy run has a fixed Ray Train name and storage
path and checkpoints at every step where it records statistics (the union of the
log and gradient points, the last step included). Each rank writes
``rank<r>.pt`` into the checkpoint (its recorded columns and its random streams;
rank 0 also the model and optimizer), so a rerun after a driver kill continues
from the last checkpoint and records exactly the statistics of an uninterrupted
run. ``--fresh`` deletes the run's folder first.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import asdict
from typing import Any, Callable

import numpy as np

from orchestrator.storage import fsutil
from orchestrator.storage.cache import ArtifactCache
from orchestrator.progress import say
from orchestrator.runtime.train import call_isolated, fit_only
from orchestrator.runtime.resources import ResourcePlan

log = logging.getLogger(__name__)
PROXY_VERSION = 1
STAT_KEYS = ("loss_traj", "grad_norm", "moso")
SaveFn = Callable[[dict, int, float], None]   # (state, step, loss) at a checkpoint step


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


def save_steps(cfg: dict) -> list[int]:
    """Checkpoint steps of the proxy: wherever statistics are recorded, and the last step."""
    return sorted(set(checkpoint_steps(cfg["steps"], cfg["log_points"]))
                  | set(checkpoint_steps(cfg["steps"], cfg["grad_checkpoints"])) | {cfg["steps"]})


def _records_state(rec: dict[str, list[np.ndarray]], n_local: int) -> dict[str, Any]:
    """Recorded columns as ``{"rec_<stat>": (n_local, t) float64 tensor}`` (t may be 0)."""
    import torch

    return {f"rec_{k}": torch.from_numpy(np.stack(v, axis=1) if v else np.zeros((n_local, 0)))
            for k, v in rec.items()}


def train_proxy(cfg: dict, data: dict[str, np.ndarray], rank: int, world: int, device: Any,
                prepare: Callable[[Any], Any], state: dict | None,
                save: SaveFn) -> tuple[dict[str, np.ndarray], int]:
    """Train the proxy DiT and record this rank's statistics (no Ray in here).

    Args:
        cfg: the proxy section plus ``stats``, ``n``, ``seed``, ``conditional``,
            ``num_classes`` (see :func:`ensure_proxy_stats`).
        data: ``ids`` (N,) int64, ``labels`` (N,) int64, ``latents`` (N, C, h, w) float32.
        rank, world: this DDP rank and the world size; the rank measures positions
            ``rank::world`` and trains on its stride of every global batch.
        device: torch device of this rank.
        prepare: wraps the model for DDP (``ray.train.torch.prepare_model``, or identity).
        state: a state passed to ``save`` earlier (same world size) to resume from, or None.
        save: called with ``(state, step, loss)`` at every :func:`save_steps` step; the
            state holds this rank's records and random streams, the model and optimizer.

    Returns:
        ``({stat: (N_rank, T or G) float64}, start step)``; the start step is 0 for a new
        run and the checkpoint's step for a resumed one.
    """
    import torch

    from models import build_dit
    from models.transport import training_loss
    from orchestrator.training.trial import EpochBatches

    x_all = torch.from_numpy(data["latents"].astype(np.float32))
    y_all = torch.from_numpy(data["labels"].astype(np.int64)) if cfg["conditional"] else None
    n, (c, h, _) = x_all.shape[0], x_all.shape[1:]
    pos = np.arange(rank, n, world)
    xs = x_all[pos].to(device)
    ys = y_all[pos].to(device) if y_all is not None else None
    ids = torch.from_numpy(data["ids"][pos].astype(np.int64)).to(device)
    torch.manual_seed(cfg["seed"])  # identical initial weights on every rank (DDP also broadcasts)
    model = build_dit(cfg["model"], input_size=h, in_channels=c,
                      num_classes=cfg["num_classes"] if cfg["conditional"] else 0)
    label_gen = torch.Generator().manual_seed(cfg["seed"] * world + rank + 7_919)
    model.label_generator = label_gen   # class dropout draws
    gen = torch.Generator().manual_seed(cfg["seed"] * world + rank)   # t and noise draws
    rec: dict[str, list[np.ndarray]] = {k: [] for k in cfg["stats"]}
    start = 0
    if state is not None:
        if int(state["world"]) != world:
            raise ValueError(f"proxy checkpoint of {state['world']} rank(s), this run has {world}")
        model.load_state_dict(state["model"])
        # The streams continue where they were: a resumed run draws what an uninterrupted one would.
        gen.set_state(state["gen"])
        label_gen.set_state(state["label_gen"])
        rec = {k: list(state[f"rec_{k}"].numpy().T) for k in cfg["stats"]}
        start = int(state["step"])
    model = prepare(model)
    inner = model.module if hasattr(model, "module") else model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"])
    if state is not None:
        opt.load_state_dict(state["opt"])
    log_at = set(checkpoint_steps(cfg["steps"], cfg["log_points"]))
    grad_at = set(checkpoint_steps(cfg["steps"], cfg["grad_checkpoints"]))
    save_at = set(save_steps(cfg))
    batches = EpochBatches(n, cfg["batch_size"], cfg["seed"])
    from tqdm import tqdm

    loss_val = float("nan")
    for step in tqdm(range(start, cfg["steps"]), desc="proxy", disable=rank != 0, mininterval=15,
                     initial=start, total=cfg["steps"]):
        idx = torch.from_numpy(batches.indices(step, rank, world))
        loss = training_loss(model, x_all[idx].to(device),
                             None if y_all is None else y_all[idx].to(device), generator=gen).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_val = float(loss.item())
        done = step + 1
        for which, at in (("log", log_at), ("grad", grad_at)):
            if done in at:
                for key, val in _measure(cfg, model, xs, ys, ids, tuple(cfg["stats"]), which, world).items():
                    rec[key].append(np.asarray(val, dtype=np.float64))
        if done in save_at and done < cfg["steps"]:
            save(_state(inner, opt, gen, label_gen, rec, done, world, len(pos)), done, loss_val)
    # Always a last checkpoint, also when resumed at the end: fit()'s Result then
    # carries this run's placement-group id (see ray_utils.release_placement_group).
    save(_state(inner, opt, gen, label_gen, rec, cfg["steps"], world, len(pos)),
         cfg["steps"], loss_val)
    return {k: np.stack(v, axis=1) if v else np.zeros((len(pos), 0)) for k, v in rec.items()}, start


def _state(inner: Any, opt: Any, gen: Any, label_gen: Any, rec: dict[str, list[np.ndarray]],
           step: int, world: int, n_local: int) -> dict[str, Any]:
    """Everything a resumed rank needs: weights, optimizer, random streams, records."""
    return {"model": inner.state_dict(), "opt": opt.state_dict(), "step": step, "world": world,
            "gen": gen.get_state(), "label_gen": label_gen.get_state(),
            **_records_state(rec, n_local)}


def write_rank_state(state: dict, directory: str, rank: int) -> None:
    """This rank's part of a checkpoint: ``rank<r>.pt`` (model and optimizer on rank 0 only)."""
    import torch

    own = state if rank == 0 else {k: v for k, v in state.items() if k not in ("model", "opt")}
    torch.save(own, os.path.join(directory, f"rank{rank}.pt"))


def read_rank_state(directory: str, rank: int, world: int) -> dict | None:
    """This rank's resume state from a checkpoint directory, or None if it has none.

    None for checkpoints of an older proxy (no rank files) or another world size.
    """
    import torch

    def load(r: int) -> dict | None:
        path = os.path.join(directory, f"rank{r}.pt")
        if not os.path.exists(path):
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    state = load(rank)
    if state is None or int(state["world"]) != world:
        log.warning("proxy: checkpoint in %s is not one of %d rank(s); starting over", directory, world)
        return None
    if rank != 0:
        shared = load(0)
        if shared is None:
            return None
        state.update(model=shared["model"], opt=shared["opt"])
    return state


def proxy_worker(cfg: dict) -> None:
    """Ray Train loop: train the proxy (resuming from a checkpoint), write this rank's shard."""
    import ray.train
    import ray.train.torch
    import torch

    torch.set_num_threads(int(cfg["threads"]))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cache = ArtifactCache(cfg["cache_root"])
    data = cache.load_arrays(cfg["latents_key"])
    state = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = read_rank_state(d, rank, world)

    def save(st: dict, step: int, loss: float) -> None:
        from orchestrator.runtime.workarounds import worker_pg_marker

        with tempfile.TemporaryDirectory() as d:
            write_rank_state(st, d, rank)
            # Every rank uploads into the same checkpoint folder; the group id rides
            # here because fit()'s Result carries the latest checkpoint's metrics.
            ray.train.report({"step": step, "loss": loss, **worker_pg_marker()},
                             checkpoint=ray.train.Checkpoint.from_directory(d))

    if state is not None and rank == 0:
        say("proxy: resuming from the checkpoint at step %d", int(state["step"]))
    rec, start = train_proxy(cfg, data, rank, world, ray.train.torch.get_device(),
                             ray.train.torch.prepare_model, state, save)
    pos = np.arange(rank, data["ids"].shape[0], world)
    cache.save_arrays(cfg["shard_keys"][rank], positions=pos.astype(np.int64),
                      start_step=np.int64(start), **rec)


def proxy_run_name(ds_name: str, key: str) -> str:
    """The fixed Ray Train run name of a dataset's proxy (its checkpoints live under it)."""
    return f"proxy-{ds_name}-{key.split('/')[1][:10]}"


def ensure_proxy_stats(cache: ArtifactCache, cfg: Any, ds_cfg: Any, latents_key: str,
                       num_classes: int, plan: ResourcePlan, fresh: bool) -> str | None:
    """Cache key of the merged statistics (arrays named by STAT_KEYS), or None if unneeded.

    A json record under the same key says how the statistics were made
    (``resumed_from_step``: 0, or the checkpoint step a cut run continued from).
    """
    stats = needed_stats(cfg)
    if not stats:
        return None
    pc = asdict(cfg.proxy)
    key = cache.key("proxy", PROXY_VERSION, latents=latents_key, proxy=pc, stats=list(stats),
                    conditional=ds_cfg.conditional, seed=ds_cfg.seed)
    if not fresh and cache.has(key, "arrays"):
        say("proxy[%s]: statistics cached (%s)", ds_cfg.name, key)
        return key
    name = proxy_run_name(ds_cfg.name, key)
    if fresh:
        fsutil.remove_dir(fsutil.join(cfg.storage.ray_storage, name))  # its checkpoints
    n = int(cache.load_arrays(latents_key)["ids"].shape[0])
    world = plan.num_workers
    shard_keys = [cache.key("proxyshard", PROXY_VERSION, proxy=key, rank=r, world=world)
                  for r in range(world)]
    say("proxy[%s]: %s on %d latents, %d step(s), stats %s", ds_cfg.name, cfg.proxy.model, n,
        cfg.proxy.steps, ", ".join(stats))
    wcfg = {**pc, "stats": list(stats), "n": n, "seed": ds_cfg.seed, "conditional": ds_cfg.conditional,
            "num_classes": num_classes, "cache_root": cache.root, "latents_key": latents_key,
            "shard_keys": shard_keys}
    call_isolated(fit_only, proxy_worker, wcfg, plan, name, cfg.storage.ray_storage,
                  cfg.resources.max_failures, solo=True)
    merged: dict[str, np.ndarray] = {}
    resumed = 0
    for sk in shard_keys:
        part = cache.load_arrays(sk)
        resumed = max(resumed, int(part["start_step"]))
        for stat in stats:
            if stat not in merged:
                merged[stat] = np.zeros((n, part[stat].shape[1]), dtype=np.float64)
            merged[stat][part["positions"]] = part[stat]
    if resumed:
        say("proxy[%s]: resumed from the checkpoint at step %d", ds_cfg.name, resumed)
    cache.save_json(key, {"resumed_from_step": resumed, "steps": cfg.proxy.steps,
                          "world_size": world, "stats": list(stats)})
    cache.save_arrays(key, **merged)   # written last: its presence means done
    for sk in shard_keys:
        cache.invalidate(sk, "arrays")
    return key
