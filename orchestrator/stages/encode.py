"""Encode stage: train (or load) the VQ-VAE, then encode every image to latents.

The VQ-VAE trains for a fixed number of steps: a small dataset (every dataset on the local
executor) with one worker from memory (:func:`train_vqvae_single`, the loop in
``training.vqvae_fit``; one Ray task on the Ray executor), otherwise inside a Ray Train
``TorchTrainer`` on the dataset's Ray Data shards (DDP, ``runtime.vqvae.train_vqvae_worker``),
which fits its latent scale on rank 0 and reports the weights as a checkpoint. The
executor's pass (:meth:`~orchestrator.runtime.executor.Executor.map_rows`: a Ray Data
``map_batches`` actor pool, or one actor here) then encodes every image. Both artifacts are content-addressed in the cache: the VQ-VAE by the data
fingerprint and the autoencoder config, the latents by the VQ-VAE's key.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from models.vqvae import images_to_model
from orchestrator.config.schema import Config, DatasetConfig
from orchestrator.errors import SourceError
from orchestrator.progress import say
from orchestrator.runtime.executor import Executor, join_columns
from orchestrator.storage import fsutil
from orchestrator.storage.cache import ArtifactCache
from orchestrator.storage.tables import Table, finish_table, write_part
from orchestrator.training.evaluate import vqvae_from_cache
from orchestrator.training.vqvae_fit import train_vqvae_in_memory

VQVAE_VERSION = 2   # 2: small datasets train from memory (another batch order)
LATENTS_VERSION = 2   # 2: a table of parts written by the encode actors (keys, uris)
SAMPLES_VERSION = 1   # the samples table alone (id, key, uri, label): no VQ-VAE
# Image sets up to this size are materialized before the VQ-VAE trains (3000 32x32
# images: 9 MB). Unmaterialized, streaming_split reads and decodes the dataset again
# for every epoch, on the CPUs the training uses (~10 epochs in the quickstart).
MATERIALIZE_BYTES = 1 << 30


class EncodeActor:
    """Ray Data actor: a batch of source rows -> one part of the latents table.

    Good rows (``error == ""``) are encoded (unless ``vqvae_key`` is None: the samples
    table alone) and written with their ``key``, ``uri`` and ``label`` (:func:`orchestrator.storage.tables.write_part`); bad rows are reported,
    not encoded. Returns one small row: ``report`` = JSON of the part's description,
    the batch's skipped ``[key, reason]`` pairs and its largest label.
    """

    def __init__(self, cache_root: str, vqvae_key: str | None, device: str, threads: int,
                 table_key: str):
        torch.set_num_threads(max(1, threads))
        self.device, self.table_key = device, table_key
        self.cache = ArtifactCache(cache_root)
        self.model = (None if vqvae_key is None   # the samples table alone
                      else vqvae_from_cache(self.cache, vqvae_key).to(device).eval())

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
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


def ensure_vqvae(cache: ArtifactCache, cfg: Config, source: Any, ds_cfg: DatasetConfig,
                 executor: Executor, fresh: bool) -> str:
    """The VQ-VAE's cache key, training or importing it when missing."""
    key = vqvae_key(cache, cfg, source.fingerprint, ds_cfg.seed)
    if not fresh and cache.has(key, "bytes"):
        say("encode[%s]: VQ-VAE cached (%s)", ds_cfg.name, key)
        return key
    ae = cfg.autoencoder
    if ae.checkpoint:
        fs, path = fsutil.filesystem(ae.checkpoint)
        with fs.open_input_stream(path) as f:
            cache.save_bytes(key, f.read())
        return key
    train_vqvae(cache, cfg, source, ds_cfg, executor, key)
    return key


def train_vqvae(cache: ArtifactCache, cfg: Config, source: Any, ds_cfg: DatasetConfig,
                executor: Executor, key: str) -> dict[str, float]:
    """Train the VQ-VAE and store it under ``key``: a small dataset with one worker from
    memory (:func:`train_vqvae_single`; a Ray task on the Ray executor), otherwise in a Ray
    Train run (DDP over the dataset's shards: ``runtime.vqvae.fit_vqvae``).

    Returns the run's last metrics: ``step``, ``train_s`` (the step loop's wall seconds,
    without the run's start-up), ``loss``, ``recon``, ...
    """
    ae, plan = cfg.autoencoder, executor.plan
    say("encode[%s]: training VQ-VAE %s for %d steps", ds_cfg.name, ae.preset, ae.train_steps)
    ae_cfg = {"preset": ae.preset, "steps": ae.train_steps, "batch_size": ae.batch_size,
              "lr": ae.lr, "seed": ds_cfg.seed}
    # The whole rows, not select_columns(["image"]): the extra id/label columns cost
    # nothing, and the Project operator's worker aborted (SIGABRT, "Mutex corrupt") in
    # a successful quickstart run (issue 13; benchmarks/repro_project_sigabrt.py).
    images = executor.good_rows(source.dataset)   # bad rows stay listed by the encode pass
    # a source that counts its rows only when it reads them (parquet, webdataset) goes
    # the streaming way
    small = executor.in_memory or (source.count is not None and
                                   source.count * ds_cfg.resolution ** 2 * 3 <= MATERIALIZE_BYTES)
    ae_cfg["in_memory"] = small
    t0 = time.perf_counter()
    if small and plan.num_workers == 1:
        config = {**ae_cfg, "threads": plan.solo_threads, "use_gpu": bool(plan.worker_gpus)}
        # The images gathered where the run is (on Ray: the block refs, <= MATERIALIZE_BYTES,
        # joined in the task; not the dataset: iterating a Ray Dataset in the task left Ray
        # Data's executor beside the training loop; not an array gathered on the driver).
        metrics = executor.call_as_worker(train_vqvae_single, "vqvae-single", config,
                                          executor.gather(images, ["image"]), cache.root, key)
    else:
        # lazy: runtime.vqvae imports Ray Train, never imported on the local executor (test_local_pipeline)
        from orchestrator.runtime.vqvae import fit_vqvae

        metrics = executor.fit_on_shards(fit_vqvae, ae_cfg,
                                         f"vqvae-{ds_cfg.name}-{key.split('/')[1][:10]}",
                                         cfg.storage.ray_storage, images, cache.root, key)
    loop_s = float(metrics.get("train_s", 0.0))
    say("encode[%s]: VQ-VAE trained: %d steps in %.0f s (%.2f steps/s), %.0f s with the run's "
        "start and checkpoint", ds_cfg.name, ae.train_steps, loop_s,
        ae.train_steps / loop_s if loop_s > 0 else float("nan"), time.perf_counter() - t0)
    return metrics


def train_vqvae_single(config: dict, images: Any, cache_root: str, key: str) -> dict[str, float]:
    """A small dataset's single-worker VQ-VAE run (on Ray one task, no Ray Train): the
    images (``Executor.gather``: on Ray the block refs) joined here,
    then :func:`orchestrator.training.vqvae_fit.train_vqvae_in_memory`. So no
    ``TorchTrainer`` (controller, placement-group cleaner, dataset manager) and no Ray Data
    iteration in this process: on 2 CPUs the loop runs at 0.95x the in-process rate,
    against 0.74x in the Ray Train worker (``benchmarks.bench_vqvae_worker``).
    """
    return train_vqvae_in_memory(config, join_columns(images)[0], cache_root, key)


def latents_key(cache: ArtifactCache, vq_key: str, fingerprint: str) -> str:
    """Cache key of a dataset's latents table (also its samples table)."""
    return cache.key("latents", LATENTS_VERSION, vqvae=vq_key, fingerprint=fingerprint)


def ensure_latents(cache: ArtifactCache, cfg: Config, source: Any, ds_cfg: DatasetConfig,
                   vq_key: str | None, executor: Executor, fresh: bool) -> str:
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
        plan = executor.plan
        device = "cuda" if plan.actor_gpus and vq_key else "cpu"
        reports = executor.map_rows(source.dataset, EncodeActor,
                                    {"cache_root": cache.root, "vqvae_key": vq_key,
                                     "device": device, "threads": plan.actor_threads,
                                     "table_key": key}, cfg.autoencoder.batch_size * 4)
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
