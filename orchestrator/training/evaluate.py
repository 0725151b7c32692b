"""A trained trial's samples and metrics: sample latents with the EMA model, decode them
with the VQ-VAE, embed them with the eval embedder, compute the configured metrics.

This is where a trial's metrics are computed (the formulas live in ``eval/``, the
feature extractors in ``models/``). No Ray here.
"""

from __future__ import annotations

import functools
import os
import tempfile
from typing import Any

import numpy as np
import torch

from orchestrator.config.schema import EvalConfig, SampleConfig
from orchestrator.storage.cache import ArtifactCache

VQVAE_FILE = "vqvae.pt"
SAMPLE_GRID_VERSION = 1   # cache keys "trialgrid/..." (the value must not change)


def vqvae_from_cache(cache: ArtifactCache, key: str) -> Any:
    """Load the VQ-VAE artifact (bytes of ``models.vqvae.save_vqvae``) as a model on CPU."""
    from models.vqvae import load_vqvae

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, VQVAE_FILE)
        with open(path, "wb") as f:
            f.write(cache.load_bytes(key))
        return load_vqvae(path)


def sample_grid_key(trial_key: str) -> str:
    """Cache key of a trial's sample grid PNG (bytes)."""
    return ArtifactCache.key("trialgrid", SAMPLE_GRID_VERSION, trial=trial_key)


@torch.no_grad()
def generate(vq: Any, ema_model: Any, sc: SampleConfig, seed: int, conditional: bool,
             num_classes: int, latent_shape: tuple[int, ...], device: Any) -> np.ndarray:
    """Sample ``sc.num_samples`` latents with the EMA model and decode them to images.

    Args:
        vq: the VQ-VAE (``decode``), any device (moved to ``device`` here).
        ema_model: the EMA DiT on ``device``.
        sc: sampler settings (steps, method, cfg scale, batch size).
        seed: the trial seed: the same noise and labels for every trial of a seed.
        conditional, num_classes: class-balanced labels when conditional.
        latent_shape: (C, h, w).
        device: torch device.

    Returns:
        (num_samples, H, W, 3) uint8 images.
    """
    from models.transport import cfg_velocity_fn, sample_ode
    from models.vqvae import model_to_images

    vq = vq.to(device).eval()
    gen = torch.Generator().manual_seed(seed)
    m = sc.num_samples
    labels = None
    if conditional:
        rng = np.random.default_rng(seed)
        labels = torch.from_numpy(rng.permutation(np.arange(m) % num_classes).astype(np.int64))
    out = []
    for s in range(0, m, sc.batch_size):
        b = min(sc.batch_size, m - s)
        noise = torch.randn((b, *latent_shape), generator=gen).to(device)
        y = labels[s:s + b].to(device) if labels is not None else None
        z = sample_ode(cfg_velocity_fn(ema_model, y, sc.cfg_scale), noise, sc.steps, sc.method)
        out.append(model_to_images(vq.decode(z)))
    return np.concatenate(out)


@functools.lru_cache(maxsize=4)
def cached_embedder(name: str, device: str, weights: str | None) -> Any:
    """``models.build_embedder`` once per process (a process that evaluates several
    trials builds the network and loads its weights once)."""
    from models import build_embedder

    return build_embedder(name, device=device, weights=weights)


def metric_name(key: str, embedder_short: str) -> str:
    """A metric's reported name: ``fd`` becomes ``fid`` (Inception) or ``fd_<short>``."""
    if key != "fd":
        return key
    return "fid" if embedder_short == "fid" else f"fd_{embedder_short}"


def evaluate(images: np.ndarray, features: np.ndarray, labels: np.ndarray, subset: np.ndarray,
             ec: EvalConfig, seed: int, num_classes: int, device: str,
             weights: str | None = None) -> dict[str, float]:
    """Configured metrics of generated images against the full data's features.

    Args:
        images: (M, H, W, 3) uint8 generated images.
        features: (N, D) eval-embedder features of the whole dataset.
        labels: (N,) int64 dataset labels (-1 = unlabelled).
        subset: (n_train,) int64 rows the trial trained on (memorization).
        ec: embedder, metrics, ``num_real`` reference rows.
        seed: picks the reference rows and the class-balanced labelling set.
        num_classes: 0 when unlabelled.
        device: "cpu" or "cuda" for the embedder.
        weights: the embedder's weight file, or None for its default.

    Returns:
        metric name -> value (``fd`` renamed by :func:`metric_name`).
    """
    from eval import METRICS, MetricInputs, balanced_indices, nearest_neighbour_labels

    emb = cached_embedder(ec.embedder, device, weights)
    fake = np.concatenate([emb(images[s:s + 128]) for s in range(0, len(images), 128)])
    feats = features.astype(np.float32)
    n = feats.shape[0]
    real_idx = np.sort(np.random.default_rng(seed).permutation(n)[:min(ec.num_real, n)])
    real, real_labels = feats[real_idx], labels[real_idx]
    fake_labels = None
    if "cluster_coverage" in ec.metrics:
        if (real_labels < 0).any():
            raise ValueError("metric 'cluster_coverage' needs a labelled dataset")
        # label each sample by its nearest neighbour in a class-balanced labelled set, so a
        # skewed dataset's large classes get no head start
        bal = balanced_indices(labels, np.random.default_rng(seed))
        fake_labels = nearest_neighbour_labels(feats[bal], labels[bal], fake)
    inputs = MetricInputs(real=real, fake=fake, train=feats[subset], train_full=feats,
                          reference_labels=real_labels, num_classes=num_classes or None,
                          fake_labels=fake_labels, prdc_k=ec.prdc_k)
    metrics: dict[str, float] = {}
    for name in ec.metrics:
        for key, value in METRICS[name](inputs).items():
            metrics[metric_name(key, emb.short)] = float(value)
    return metrics


def save_sample_grid(cache: ArtifactCache, key: str, images: np.ndarray) -> None:
    """The first 64 images as an 8x8 PNG grid, cached as bytes under ``key``."""
    from eval import save_sample_grid as write_grid

    with tempfile.TemporaryDirectory() as d:
        path = write_grid(images[:64], os.path.join(d, "samples.png"), nrow=8)
        with open(path, "rb") as f:
            cache.save_bytes(key, f.read())
