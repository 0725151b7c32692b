"""Encode stage: train (or load) the VQ-VAE, then encode every image to latents.

The VQ-VAE trains for a fixed number of steps: a small dataset with one worker in one
Ray task from memory (:func:`train_vqvae_single`), otherwise inside a Ray Train
``TorchTrainer`` on the dataset's Ray Data shards (DDP), which fits its latent scale on
rank 0 and reports the weights as a checkpoint. A Ray Data ``map_batches`` actor pool
then encodes every image. Both artifacts are content-addressed in the cache: the VQ-VAE by the data
fingerprint and the autoencoder config, the latents by the VQ-VAE's key.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict
from typing import Any

import numpy as np

from orchestrator.config.schema import Config, DatasetConfig
from orchestrator.errors import SourceError
from orchestrator.progress import Progress, say
from orchestrator.runtime.cluster import (collect_reports, gather_in_task, good_rows, join_refs,
                                          map_actor_pool)
from orchestrator.runtime.resources import ResourcePlan
from orchestrator.runtime.train import call_as_worker, call_isolated, fit_torch
from orchestrator.storage.cache import ArtifactCache
from orchestrator.storage.tables import Table, finish_table, write_part
from orchestrator.training.evaluate import VQVAE_FILE, vqvae_from_cache

VQVAE_VERSION = 2   # 2: small datasets train from memory (another batch order)
LATENTS_VERSION = 2   # 2: a table of parts written by the encode actors (keys, uris)
SAMPLES_VERSION = 1   # the samples table alone (id, key, uri, label): no VQ-VAE
# Image sets up to this size are materialized before the VQ-VAE trains (3000 32x32
# images: 9 MB). Unmaterialized, streaming_split reads and decodes the dataset again
# for every epoch, on the CPUs the training uses (~10 epochs in the quickstart).
MATERIALIZE_BYTES = 1 << 30


def _steps_from_memory(model: Any, opt: Any, images: np.ndarray, batch_size: int, steps: int,
                       seed: int, device: Any, bar: Progress) -> tuple[dict, list[np.ndarray]]:
    """``steps`` VQ-VAE steps on (N, H, W, 3) uint8 ``images`` held in memory, batches of a
    seeded permutation per epoch; returns the last step's logs and the latest <= 512
    images (the latent-scale sample)."""
    import torch

    from models.vqvae import images_to_model, vqvae_train_step

    data = images_to_model(images)
    gen = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.int64)
    logs: dict = {}
    recent: list[np.ndarray] = []
    for _ in range(steps):
        if len(order) < batch_size:
            order = torch.cat([order, torch.randperm(len(data), generator=gen)])
        idx, order = order[:batch_size], order[batch_size:]
        logs = vqvae_train_step(model, data[idx].to(device), opt)
        recent = (recent + [images[idx.numpy()]])[-max(1, 512 // batch_size):]
        bar.update(1)
    return logs, recent


def _save_with_scale(model: Any, recent: list[np.ndarray], device: Any, path: str,
                     preset: str) -> None:
    """Fit the latent scale on the latest images, then save the VQ-VAE file."""
    import torch

    from models.vqvae import fit_latent_scale, images_to_model, save_vqvae

    with torch.no_grad():
        fit_latent_scale(model, images_to_model(np.concatenate(recent)).to(device))
    save_vqvae(model.cpu(), path, preset)


def _all_images(ds: Any) -> np.ndarray:
    """Every image of a Ray Data dataset (or shard), (N, H, W, 3) uint8, in its order."""
    return np.concatenate([b["image"] for b in ds.iter_batches(batch_size=4096,
                                                              batch_format="numpy")])


def train_vqvae_worker(config: dict) -> None:
    """Ray Train loop: fixed-step VQ-VAE training on this rank's data shard."""
    import ray.train
    import ray.train.torch
    import torch
    from models.vqvae import build_vqvae, images_to_model, vqvae_train_step

    torch.set_num_threads(int(config["threads"]))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(config["seed"] * world + rank)  # VQ-VAE init + codebook restarts
    device = ray.train.torch.get_device()
    model = build_vqvae(config["preset"])
    model = ray.train.torch.prepare_model(model) if world > 1 else model.to(device)
    inner = model.module if hasattr(model, "module") else model
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    shard = ray.train.get_dataset_shard("train")
    local_bs = max(1, config["batch_size"] // world)
    steps, step, logs = config["steps"], 0, {}
    recent: list[np.ndarray] = []   # the latest <= 512 images: the latent-scale sample
    bar = Progress("vq-vae", steps, disable=rank != 0)
    t_loop = time.perf_counter()
    if config.get("in_memory"):
        # A small dataset: read this rank's split once, then draw every batch from memory.
        # Ray Data's per-batch iteration halved the step rate on 2 cores (1.41 vs 2.9
        # steps/s in-process, issue 13).
        logs, recent = _steps_from_memory(model, opt, _all_images(shard), local_bs, steps,
                                          config["seed"] * world + rank, device, bar)
        step = steps
    while step < steps:
        # Every rank runs the same number of epochs of its equal split (streaming_split
        # starts an epoch only when all ranks do), so no rank iterates alone below.
        for batch in shard.iter_batches(batch_size=local_bs, batch_format="numpy",
                                        local_shuffle_buffer_size=4 * local_bs,
                                        local_shuffle_seed=config["seed"] + step):
            logs = vqvae_train_step(model, images_to_model(batch["image"]).to(device), opt)
            recent = (recent + [batch["image"]])[-max(1, 512 // local_bs):]
            step += 1
            bar.update(1)
            if step >= steps:
                break
    train_s = time.perf_counter() - t_loop   # the step loop alone (the data read included)
    with tempfile.TemporaryDirectory() as d:
        ckpt = None
        if rank == 0:
            _save_with_scale(inner, recent, device, os.path.join(d, VQVAE_FILE), config["preset"])
            ckpt = ray.train.Checkpoint.from_directory(d)
        from orchestrator.runtime.workarounds import worker_pg_marker

        metrics = {"step": step, "train_s": train_s, **{k: float(v) for k, v in logs.items()}}
        ray.train.report({**metrics, **worker_pg_marker()}, checkpoint=ckpt)


def train_vqvae_single(config: dict, images: np.ndarray | list, cache_root: str,
                       key: str) -> dict[str, float]:
    """A small dataset's single-worker VQ-VAE run in one process (a Ray task), no Ray Train.

    The same steps, seeds and batches as :func:`train_vqvae_worker` with one worker (its
    in-memory path), so the same weights. ``images``: (N, H, W, 3) uint8, or the block
    refs of :func:`orchestrator.runtime.cluster.gather_in_task` (joined here), so: no ``TorchTrainer`` (controller, placement-group cleaner, dataset manager)
    and no Ray Data iteration in this process. On 2 CPUs the loop then runs at 0.95x the
    in-process rate, against 0.74x in the Ray Train worker and 0.82x in a task that
    iterated the dataset itself (``benchmarks.bench_vqvae_worker``). The run reports no
    intermediate checkpoint either way: a retried task starts over.
    Stores the VQ-VAE under ``key`` and returns ``step``, ``train_s`` and the last logs.
    """
    import torch

    from models.vqvae import build_vqvae

    torch.set_num_threads(int(config["threads"]))
    torch.manual_seed(config["seed"])   # VQ-VAE init + codebook restarts, as rank 0 of 1
    device = torch.device("cuda" if config["use_gpu"] else "cpu")
    model = build_vqvae(config["preset"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    bar = Progress("vq-vae", config["steps"])
    t_loop = time.perf_counter()
    if isinstance(images, list):
        images = join_refs(images)[0]
    # a writable copy: the task's argument is a read-only view of the object store
    logs, recent = _steps_from_memory(model, opt, np.array(images), config["batch_size"],
                                      config["steps"], config["seed"], device, bar)
    train_s = time.perf_counter() - t_loop
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, VQVAE_FILE)
        _save_with_scale(model, recent, device, path, config["preset"])
        with open(path, "rb") as f:
            ArtifactCache(cache_root).save_bytes(key, f.read())
    return {"step": config["steps"], "train_s": train_s, **{k: float(v) for k, v in logs.items()}}


class EncodeActor:
    """Ray Data actor: a batch of source rows -> one part of the latents table.

    Good rows (``error == ""``) are encoded (unless ``vqvae_key`` is None: the samples
    table alone) and written with their ``key``, ``uri`` and ``label`` (:func:`orchestrator.storage.tables.write_part`); bad rows are reported,
    not encoded. Returns one small row: ``report`` = JSON of the part's description,
    the batch's skipped ``[key, reason]`` pairs and its largest label.
    """

    def __init__(self, cache_root: str, vqvae_key: str | None, device: str, threads: int,
                 table_key: str):
        import torch

        torch.set_num_threads(max(1, threads))
        self.device, self.table_key = device, table_key
        self.cache = ArtifactCache(cache_root)
        self.model = (None if vqvae_key is None   # the samples table alone
                      else vqvae_from_cache(self.cache, vqvae_key).to(device).eval())

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from models.vqvae import images_to_model

        ids = np.asarray(batch["id"], dtype=np.int64)
        keys = batch.get("key", np.array([str(i) for i in ids], dtype=object))
        errors = batch.get("error", np.full(len(ids), "", dtype=object))
        ok = np.array([not e for e in errors], dtype=bool)
        report: dict = {"skipped": [[str(k), str(e)] for k, e in zip(keys[~ok], errors[~ok])],
                        "part": None, "label_max": -1}
        if ok.any():
            labels = np.asarray(batch["label"], dtype=np.int64)[ok]
            cols = {"id": ids[ok], "key": keys[ok], "uri": batch.get("uri", keys)[ok],
                    "label": labels}
            if self.model is not None:
                with torch.no_grad():
                    z = self.model.encode(images_to_model(batch["image"][ok]).to(self.device))
                cols["latent"] = z.float().cpu().numpy()
            report["part"] = write_part(self.cache, self.table_key, f"part-{ids[ok].min():020d}",
                                        cols)
            report["label_max"] = int(labels.max())
        return {"report": np.array([json.dumps(report)], dtype=object)}


def vqvae_key(cache: ArtifactCache, cfg: Config, fingerprint: str, ds_seed: int) -> str:
    ae = asdict(cfg.autoencoder)
    if ae["checkpoint"]:
        return cache.key("vqvae", VQVAE_VERSION, checkpoint=ae["checkpoint"], preset=ae["preset"])
    return cache.key("vqvae", VQVAE_VERSION, fingerprint=fingerprint, autoencoder=ae, seed=ds_seed)


def ensure_vqvae(cache: ArtifactCache, cfg: Config, source: Any, ds_cfg: DatasetConfig, plan: ResourcePlan,
                 fresh: bool) -> str:
    """The VQ-VAE's cache key, training or importing it when missing."""
    key = vqvae_key(cache, cfg, source.fingerprint, ds_cfg.seed)
    if not fresh and cache.has(key, "bytes"):
        say("encode[%s]: VQ-VAE cached (%s)", ds_cfg.name, key)
        return key
    ae = cfg.autoencoder
    if ae.checkpoint:
        from orchestrator.storage import fsutil

        fs, path = fsutil.filesystem(ae.checkpoint)
        with fs.open_input_stream(path) as f:
            cache.save_bytes(key, f.read())
        return key
    train_vqvae(cache, cfg, source, ds_cfg, plan, key)
    return key


def train_vqvae(cache: ArtifactCache, cfg: Config, source: Any, ds_cfg: DatasetConfig, plan: ResourcePlan,
                key: str) -> dict[str, float]:
    """Train the VQ-VAE and store it under ``key``: a small dataset with one worker in one
    Ray task (:func:`train_vqvae_single`), otherwise in a Ray Train run (DDP).

    Returns the run's last metrics: ``step``, ``train_s`` (the step loop's wall seconds,
    without the run's start-up), ``loss``, ``recon``, ...
    """
    ae = cfg.autoencoder
    say("encode[%s]: training VQ-VAE %s for %d steps", ds_cfg.name, ae.preset, ae.train_steps)
    ae_cfg = {"preset": ae.preset, "steps": ae.train_steps, "batch_size": ae.batch_size,
              "lr": ae.lr, "seed": ds_cfg.seed}
    # The whole rows, not select_columns(["image"]): the extra id/label columns cost
    # nothing, and the Project operator's worker aborted (SIGABRT, "Mutex corrupt") in
    # a successful quickstart run (issue 13; benchmarks/repro_project_sigabrt.py).
    images = good_rows(source.dataset)   # bad rows stay listed by the encode pass
    # a source that counts its rows only when it reads them (parquet, webdataset) goes
    # the streaming way
    small = (source.count is not None
             and source.count * ds_cfg.resolution ** 2 * 3 <= MATERIALIZE_BYTES)
    if plan.spare_cpus() < 1.0 or small:
        # No CPU left for Ray Data's tasks beside the Train workers (small machines), or
        # a small dataset: run the read tasks once, now, so the workers only fetch
        # finished blocks (not a re-read per epoch).
        images = images.materialize()
    ae_cfg["in_memory"] = small
    t0 = time.perf_counter()
    if small and plan.num_workers == 1:
        config = {**ae_cfg, "threads": plan.solo_threads, "use_gpu": bool(plan.worker_gpus)}
        # The images' block refs (<= MATERIALIZE_BYTES), joined in the task: not the
        # dataset (iterating a Ray Dataset in the task left Ray Data's executor beside the
        # training loop) and not an array gathered on the driver.
        metrics = call_as_worker(train_vqvae_single, plan, cfg.resources.max_failures,
                                 "vqvae-single", config, gather_in_task(images, ["image"]),
                                 cache.root, key)
    else:
        metrics = call_isolated(fit_vqvae, ae_cfg, plan,
                                f"vqvae-{ds_cfg.name}-{key.split('/')[1][:10]}",
                                cfg.storage.ray_storage, cfg.resources.max_failures, images,
                                cache.root, key)
    loop_s = float(metrics.get("train_s", 0.0))
    say("encode[%s]: VQ-VAE trained: %d steps in %.0f s (%.2f steps/s), %.0f s with the run's "
        "start and checkpoint", ds_cfg.name, ae.train_steps, loop_s,
        ae.train_steps / loop_s if loop_s > 0 else float("nan"), time.perf_counter() - t0)
    return metrics


def fit_vqvae(ae_cfg: dict, plan: ResourcePlan, name: str, storage: str, max_failures: int,
              images: Any, cache_root: str, key: str) -> dict[str, float]:
    """Train the VQ-VAE and store its file in the cache (runs in an isolated actor);
    returns the run's last metrics."""
    result = fit_torch(train_vqvae_worker, ae_cfg, plan, name, storage, max_failures,
                       datasets={"train": images}, solo=True)
    with result.checkpoint.as_directory() as d:
        with open(os.path.join(d, VQVAE_FILE), "rb") as f:
            ArtifactCache(cache_root).save_bytes(key, f.read())
    return {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}


def latents_key(cache: ArtifactCache, vq_key: str, fingerprint: str) -> str:
    """Cache key of a dataset's latents table (also its samples table)."""
    return cache.key("latents", LATENTS_VERSION, vqvae=vq_key, fingerprint=fingerprint)


def ensure_latents(cache: ArtifactCache, cfg: Config, source: Any, ds_cfg: DatasetConfig, vq_key: str | None,
                   plan: ResourcePlan, fresh: bool) -> str:
    """The key of the dataset's latents table, encoding every image when it is missing.

    The table (:class:`orchestrator.storage.tables.Table`) has columns ``id``, ``key``,
    ``uri``, ``label``, ``latent`` (C, h, w) float32 for every good row, written by the
    encode actors; its ``meta`` holds ``count``, ``num_classes`` and ``skipped`` (the
    rows that did not decode: ``[key, reason]``). The skipped rows are then listed in
    ``<output_dir>/data/<dataset>/skipped.csv`` and checked against ``data.max_skipped``.
    ``vq_key`` None writes the samples table alone (no ``latent`` column, no VQ-VAE: a
    ``--until select`` run whose methods need no latents; ``--until``'s ``needs_latents``).

    Raises:
        SourceError: more than ``data.max_skipped`` of the rows are bad (the table stays
            cached: a rerun with a higher limit reuses it).
    """
    key = (cache.key("samples", SAMPLES_VERSION, fingerprint=source.fingerprint)
           if vq_key is None else latents_key(cache, vq_key, source.fingerprint))
    what = "latents" if vq_key else "samples"
    if not fresh and Table.exists(cache, key):
        say("encode[%s]: %s cached (%s)", ds_cfg.name, what, key)
    else:
        device = "cuda" if plan.actor_gpus and vq_key else "cpu"
        out = map_actor_pool(source.dataset, EncodeActor,
                             {"cache_root": cache.root, "vqvae_key": vq_key, "device": device,
                              "threads": plan.actor_threads, "table_key": key},
                             plan, cfg.autoencoder.batch_size * 4)
        reports = collect_reports(out)
        parts = [r["part"] for r in reports if r["part"]]
        skipped = sorted(s for r in reports for s in r["skipped"])
        n_good = sum(p["rows"] for p in parts)
        if n_good == 0:
            raise SourceError(f"dataset {ds_cfg.name}: no readable image among "
                              f"{len(skipped)} rows" + (f" (e.g. {skipped[0][0]}: "
                                                        f"{skipped[0][1]})" if skipped else ""))
        finish_table(cache, key, parts, {
            "count": n_good, "skipped": skipped,
            "num_classes": int(max(r["label_max"] for r in reports)) + 1})
        say("encode[%s]: %d %s in %d part(s)", ds_cfg.name, n_good, what, len(parts))
    check_skipped(cfg, ds_cfg, Table(cache, key).meta)
    return key


def check_skipped(cfg: Config, ds_cfg: DatasetConfig, meta: dict) -> None:
    """List the dataset's skipped rows in ``<output_dir>/data/<name>/skipped.csv`` (always
    written, a header alone when none) and stop when they exceed ``data.max_skipped``.

    Raises:
        SourceError: the share of bad rows is over ``data.max_skipped``.
    """
    import csv
    import io

    from orchestrator.storage import fsutil

    skipped, good = meta.get("skipped", []), int(meta.get("count", 0))
    total = good + len(skipped)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["key", "reason"])
    writer.writerows(skipped)
    path = fsutil.join(cfg.experiment.output_dir, "data", ds_cfg.name, "skipped.csv")
    fs, where = fsutil.filesystem(path)
    fs.create_dir(where.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(where) as f:
        f.write(buf.getvalue().encode())
    if not skipped:
        return
    limit = float(getattr(cfg.data, "max_skipped", 0.01))
    say("%s: skipped %d of %d rows as unreadable, e.g. %s: %s (listed in %s)", ds_cfg.name,
        len(skipped), total, skipped[0][0], skipped[0][1], path)
    if len(skipped) > limit * total:
        raise SourceError(f"dataset {ds_cfg.name}: {len(skipped)} of {total} rows "
                          f"({len(skipped) / total:.1%}) are unreadable, more than "
                          f"data.max_skipped {limit:g}; see {path}")
