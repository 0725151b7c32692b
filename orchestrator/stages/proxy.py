"""Proxy stage: one DDP proxy DiT run on all latents per experiment seed, recording
per-sample statistics.

Runs only when a configured method's ``needs_stats`` asks. The experiment seed sets
the proxy's initial weights, batch order, class dropout and the statistics' (t, noise)
draws, so the score-based subsets of two seeds come from two independent proxies
(``experiment.seeds: [0, 1, 2]`` trains three proxies per dataset). The training and the
statistics are :func:`orchestrator.training.proxy_stats.train_proxy`; this module
decides what is cached, runs it through the executor (:func:`proxy_worker`: a Ray Train
run on Ray, a plain call on the local executor) and merges the ranks' shards. Each rank writes its shard to the cache; the driver gathers the
shards by position and caches the merged arrays under a key of the latents, the proxy
config and the stats set.

Resume: the proxy run has a fixed Ray Train name and storage path, so a rerun after
a driver kill continues from its last checkpoint (see ``training/proxy_stats.py``);
``--fresh`` deletes the run's folder first.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from orchestrator.config.schema import Config, DatasetConfig
from orchestrator.progress import say
from orchestrator.runtime.executor import Executor
from orchestrator.storage import fsutil
from orchestrator.storage.cache import ArtifactCache
from orchestrator.storage.tables import Table
from orchestrator.training.proxy_stats import (STAT_DRAWS, STAT_KEYS, rank_files, read_rank_state,
                                                record_keys, stat_draws, train_proxy)

# 4: each statistic also from each half of its draws (<stat>_half_a / _half_b; MoSo's full
# score from the halves' gradients); 3: GraNd of the output layer at proxy.grand_draws draws,
# EL2N's loss_last; 2: shared stratified t grid (pruning.stats), seeded by the experiment seed
PROXY_VERSION = 4


def needed_stats(cfg: Config) -> tuple[str, ...]:
    """Union of the configured methods' ``needs_stats``, in STAT_KEYS order."""
    want = set()
    for m in cfg.pruning.methods:
        for ds in cfg.data.datasets:
            want.update(m.build_pruner(ds.name).needs_stats)
    unknown = want - set(STAT_KEYS)
    if unknown:
        raise ValueError(f"pruning methods need unknown proxy statistics {sorted(unknown)}")
    return tuple(k for k in STAT_KEYS if k in want)


def proxy_worker(cfg: dict, rt: Any = None) -> None:
    """Train the proxy (resuming from a checkpoint), write this rank's shard.

    ``rt``: the ``TrialRuntime`` (rank, device, checkpoints): the local executor's
    ``FolderRuntime``; None inside a Ray Train worker (its ``TrainRuntime``)."""
    torch.set_num_threads(int(cfg["threads"]))
    if rt is None:
        # lazy: runtime.train imports Ray, never imported on the local executor (test_local_pipeline)
        from orchestrator.runtime.train import TrainRuntime

        rt = TrainRuntime()
    cache = ArtifactCache(cfg["cache_root"])
    data = read_latents(cache, cfg["latents_key"])
    state = rt.load_checkpoint(lambda d: read_rank_state(d, rt.rank, rt.world))

    def save(st: dict, step: int, loss: float) -> None:
        # every rank uploads its file into the same checkpoint folder
        rt.save_checkpoint({"step": step, "loss": loss}, rank_files(st, rt.rank))

    if state is not None and rt.rank == 0:
        say("proxy: resuming from the checkpoint at step %d", int(state["step"]))
    rec, start = train_proxy(cfg, data, rt.rank, rt.world, rt.device, rt.prepare_model, state, save)
    pos = np.arange(rt.rank, data["ids"].shape[0], rt.world)
    cache.save_arrays(cfg["shard_keys"][rt.rank], positions=pos.astype(np.int64),
                      start_step=np.int64(start), **rec)


def read_latents(cache: ArtifactCache, key: str) -> dict[str, np.ndarray]:
    """Every row of a latents table in id order: ``ids`` (N,) int64, ``labels`` (N,) int64,
    ``latents`` (N, C, h, w) float32 (in a proxy worker, which measures every sample)."""
    rows = Table(cache, key).read(["label", "latent"])
    return {"ids": rows["id"], "labels": rows["label"].astype(np.int64),
            "latents": rows["latent"].astype(np.float32)}


def proxy_run_name(ds_name: str, key: str) -> str:
    """The fixed Ray Train run name of a dataset's proxy (its checkpoints live under it)."""
    return f"proxy-{ds_name}-{key.split('/')[1][:10]}"


def ensure_proxy_stats(cache: ArtifactCache, cfg: Config, ds_cfg: DatasetConfig, latents_key: str,
                       num_classes: int, executor: Executor, fresh: bool,
                       seed: int) -> str | None:
    """Cache key of the merged statistics, or None if unneeded.

    The arrays are named by ``training.proxy_stats.record_keys``: each statistic of
    STAT_KEYS the methods need, (N, T or G) float64 in id order, and, when its K >= 2,
    the same statistic from each half of its draws (``<stat>_half_a``, ``<stat>_half_b``,
    same shape; the score stage's split-half reliability).

    ``seed`` is the experiment seed: it seeds the proxy's initialisation and every draw.

    A json record under the same key says how the statistics were made
    (``resumed_from_step``: 0, or the checkpoint step a cut run continued from;
    ``draws``: {stat: K}; ``halves``: {stat: "" when recorded, else why not}).
    """
    stats = needed_stats(cfg)
    if not stats:
        return None
    pc = asdict(cfg.proxy)
    key = cache.key("proxy", PROXY_VERSION, latents=latents_key, proxy=pc, stats=list(stats),
                    conditional=ds_cfg.conditional, seed=seed)
    if not fresh and cache.has(key, "arrays"):
        say("proxy[%s]: statistics cached, seed %d (%s)", ds_cfg.name, seed, key)
        return key
    name = proxy_run_name(ds_cfg.name, key)
    if fresh:
        fsutil.remove_dir(fsutil.join(cfg.storage.ray_storage, name))  # its checkpoints
    n = Table(cache, latents_key).rows
    world = executor.plan.num_workers
    shard_keys = [cache.key("proxyshard", PROXY_VERSION, proxy=key, rank=r, world=world)
                  for r in range(world)]
    say("proxy[%s]: %s on %d latents, %d step(s), stats %s, seed %d", ds_cfg.name,
        cfg.proxy.model, n, cfg.proxy.steps, ", ".join(stats), seed)
    wcfg = {**pc, "stats": list(stats), "n": n, "seed": seed, "conditional": ds_cfg.conditional,
            "num_classes": num_classes, "cache_root": cache.root, "latents_key": latents_key,
            "shard_keys": shard_keys}
    executor.fit(proxy_worker, wcfg, name, cfg.storage.ray_storage)
    merged: dict[str, np.ndarray] = {}
    resumed = 0
    for sk in shard_keys:
        part = cache.load_arrays(sk)
        resumed = max(resumed, int(part["start_step"]))
        for stat in record_keys(wcfg, stats):
            if stat not in merged:
                merged[stat] = np.zeros((n, part[stat].shape[1]), dtype=np.float64)
            merged[stat][part["positions"]] = part[stat]
    if resumed:
        say("proxy[%s]: resumed from the checkpoint at step %d", ds_cfg.name, resumed)
    cache.save_json(key, {"resumed_from_step": resumed, "steps": cfg.proxy.steps,
                          "world_size": world, "stats": list(stats),
                          "draws": {s: stat_draws(wcfg, s) for s in stats},
                          "halves": {s: halves_reason(wcfg, s) for s in stats}})
    cache.save_arrays(key, **merged)   # written last: its presence means done
    for sk in shard_keys:
        cache.invalidate(sk, "arrays")
    return key


def halves_reason(cfg: dict, stat: str) -> str:
    """Why ``stat`` has no split halves ("" when it has them): its K = ``proxy.<entry>`` < 2."""
    k = stat_draws(cfg, stat)
    return "" if k >= 2 else (f"proxy.{STAT_DRAWS[stat]} = {k}: a single draw has no two halves "
                              "to compare")
