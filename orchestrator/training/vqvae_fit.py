"""The VQ-VAE's fixed-step training from memory (no Ray): the loop of a small dataset's
single-worker run and of the Ray Train worker's in-memory path (``runtime.vqvae``), and
the latent-scale fit that ends every run.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import numpy as np
import torch

from models.vqvae import (build_vqvae, fit_latent_scale, images_to_model, save_vqvae,
                          vqvae_train_step)
from orchestrator.progress import Progress
from orchestrator.storage.cache import ArtifactCache
from orchestrator.training.evaluate import VQVAE_FILE


def steps_from_memory(model: Any, opt: Any, images: np.ndarray, batch_size: int, steps: int,
                      seed: int, device: Any, bar: Progress) -> tuple[dict, list[np.ndarray]]:
    """``steps`` VQ-VAE steps on (N, H, W, 3) uint8 ``images`` held in memory, batches of a
    seeded permutation per epoch; returns the last step's logs and the latest <= 512
    images (the latent-scale sample)."""
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


def save_with_scale(model: Any, recent: list[np.ndarray], device: Any, path: str,
                    preset: str) -> None:
    """Fit the latent scale on the latest images, then save the VQ-VAE file."""
    with torch.no_grad():
        fit_latent_scale(model, images_to_model(np.concatenate(recent)).to(device))
    save_vqvae(model.cpu(), path, preset)


def train_vqvae_in_memory(config: dict, images: np.ndarray, cache_root: str,
                          key: str) -> dict[str, float]:
    """A small dataset's single-worker VQ-VAE run in this process, from memory.

    The same steps, seeds and batches as ``runtime.vqvae.train_vqvae_worker`` with one
    worker (its in-memory path), so the same weights. ``images``: (N, H, W, 3) uint8. The
    run reports no intermediate checkpoint: a retried run starts over. Stores the VQ-VAE
    under ``key`` in the cache at ``cache_root`` and returns ``step``, ``train_s`` and the
    last logs.
    """
    torch.set_num_threads(int(config["threads"]))
    torch.manual_seed(config["seed"])   # VQ-VAE init + codebook restarts, as rank 0 of 1
    device = torch.device("cuda" if config["use_gpu"] else "cpu")
    model = build_vqvae(config["preset"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    bar = Progress("vq-vae", config["steps"])
    t_loop = time.perf_counter()
    # a writable copy: a Ray task's argument is a read-only view of the object store
    logs, recent = steps_from_memory(model, opt, np.array(images), config["batch_size"],
                                     config["steps"], config["seed"], device, bar)
    train_s = time.perf_counter() - t_loop
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, VQVAE_FILE)
        save_with_scale(model, recent, device, path, config["preset"])
        with open(path, "rb") as f:
            ArtifactCache(cache_root).save_bytes(key, f.read())
    return {"step": config["steps"], "train_s": train_s, **{k: float(v) for k, v in logs.items()}}
