"""The VQ-VAE of a large dataset on Ray: a Ray Train worker loop over the dataset's shards
(DDP). The loop from memory and the latent-scale fit are ``orchestrator.training.vqvae_fit``
(no Ray); the encode stage picks the path (a small dataset's one-worker run is
``stages.encode.train_vqvae_single``) and imports this module only for a Ray Train run.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch

from models.vqvae import build_vqvae, images_to_model, vqvae_train_step
from orchestrator.progress import Progress
from orchestrator.runtime.resources import ResourcePlan
from orchestrator.runtime.train import fit_torch
from orchestrator.runtime.workarounds import worker_pg_marker
from orchestrator.storage.cache import ArtifactCache
from orchestrator.training.evaluate import VQVAE_FILE
from orchestrator.training.vqvae_fit import save_with_scale, steps_from_memory


def all_images(ds: Any) -> np.ndarray:
    """Every image of a Ray Data dataset (or shard), (N, H, W, 3) uint8, in its order."""
    return np.concatenate([b["image"] for b in ds.iter_batches(batch_size=4096,
                                                              batch_format="numpy")])


def train_vqvae_worker(config: dict) -> None:
    """Ray Train loop: fixed-step VQ-VAE training on this rank's data shard."""
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
        logs, recent = steps_from_memory(model, opt, all_images(shard), local_bs, steps,
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
            save_with_scale(inner, recent, device, os.path.join(d, VQVAE_FILE), config["preset"])
            ckpt = ray.train.Checkpoint.from_directory(d)
        metrics = {"step": step, "train_s": train_s, **{k: float(v) for k, v in logs.items()}}
        ray.train.report({**metrics, **worker_pg_marker()}, checkpoint=ckpt)


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
