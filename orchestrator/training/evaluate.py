"""A trained trial's samples and metrics: sample latents with the EMA model, decode them
with the VQ-VAE, embed them in every evaluation space, compute the configured metrics
per space.

This is where a trial's metrics are computed (the formulas live in ``eval/``, the
feature extractors in ``models/``). No Ray here.
"""

from __future__ import annotations

import functools
import os
import tempfile
from typing import Any, Mapping

import numpy as np
import torch

from eval import METRICS, MetricInputs, balanced_indices, nearest_neighbour_labels
from eval import save_sample_grid as write_grid
from eval.coverage import label_agreement, label_distribution
from eval.memorization import l2_normalize
from models import EMBEDDERS, build_embedder
from models.transport import cfg_velocity_fn, sample_ode
from models.vqvae import load_vqvae, model_to_images
from orchestrator.config.schema import EvalConfig, SampleConfig
from orchestrator.storage.cache import ArtifactCache
from pruning.kmeans import kmeans

VQVAE_FILE = "vqvae.pt"
SAMPLE_GRID_VERSION = 1   # cache keys "trialgrid/..." (the value must not change)
# Seed of the evaluation centres' k-means (training_centroids). The clustering methods run
# k-means with the experiment seed (small integers: 0, 1, 2, ...) in their selection space;
# a fixed seed outside that range keeps (d)'s centres from being the selection's own
# centres even in a space both use, and the same for every trial of a dataset and space.
CENTROID_SEED = 1_000_003
# The space whose network labels the samples for claim (c)
# (``models.classifier.ClassifierEmbedder.predict``).
PREDICTOR = "classifier"


def vqvae_from_cache(cache: ArtifactCache, key: str) -> Any:
    """Load the VQ-VAE artifact (bytes of ``models.vqvae.save_vqvae``) as a model on CPU."""
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


def space_short(embedder: str) -> str:
    """The short name of an evaluation space (``models.EMBEDDERS[embedder].short``)."""
    return EMBEDDERS[embedder].short


@functools.lru_cache(maxsize=4)
def cached_embedder(name: str, device: str, weights: str | None) -> Any:
    """``models.build_embedder`` once per process (a process that evaluates several
    trials builds the network and loads its weights once)."""
    return build_embedder(name, device=device, weights=weights)


def metric_name(key: str, embedder_short: str) -> str:
    """The one naming rule of a metric measured in a feature space: ``<key>_<short>``
    (``fd_effnet``, ``precision_cls``, ``mem_nn_mean_cls``), except ``fd`` in Inception
    space, which is ``fid``."""
    if key == "fd" and embedder_short == "fid":
        return "fid"
    return f"{key}_{embedder_short}"


def evaluate(images: np.ndarray, features: Mapping[str, np.ndarray], labels: np.ndarray,
             subset: np.ndarray, ec: EvalConfig, seed: int, num_classes: int, device: str,
             weights: Mapping[str, str | None] | None = None, *,
             reference: Mapping[str, np.ndarray],
             reference_labels: np.ndarray | None = None,
             centroids: Mapping[str, np.ndarray] | None = None,
             train_nn: Mapping[str, np.ndarray] | None = None) -> dict[str, float]:
    """Configured metrics of generated images in every evaluation space (``ec.embedders``),
    against the held-out reference.

    FD, PRDC, Vendi and the coverage metrics compare against ``reference`` (images no
    training, proxy, scoring or selection saw); memorization measures the distance to
    the full training set (``mem_nn_*``) and to the trial's subset (``mem_subset_*``).

    Args:
        images: (M, H, W, 3) uint8 generated images.
        features: eval embedder name -> (N, D) features of the whole training set.
        labels: (N,) int64 training-set labels (-1 = unlabelled).
        subset: (n_train,) int64 rows the trial trained on (memorization).
        ec: spaces, metrics, ``prdc_k``.
        seed: picks the class-balanced labelling set.
        num_classes: 0 when unlabelled.
        device: "cpu" or "cuda" for the embedders.
        weights: embedder name -> local weight file (None or absent: its default).
        reference: eval embedder name -> (R, D) features of the held-out reference
            (already capped at ``eval.num_real``).
        reference_labels: (R,) int64 labels of the reference (-1 = unlabelled), or None.
        centroids: eval embedder name -> (k, D) :func:`training_centroids` of that space,
            precomputed once per dataset; a space absent here computes its own.
        train_nn: eval embedder name -> (N,) ``eval.memorization.train_nn_distances`` of
            that space, precomputed once per dataset; a space absent here computes its own.

    Returns:
        metric name -> value, named by :func:`metric_name` per space; with
        ``cluster_coverage`` on a labelled dataset also ``subset_share_<c>``, the class
        shares of the training subset itself (one set, no space), and, when the
        ``classifier`` space is evaluated, its predicted class of each sample
        (``cov_pred_share_<c>_cls``) and in every space the agreement of that prediction
        with the space's nearest-neighbour label (``cov_label_agreement_<short>``).
    """
    metrics: dict[str, float] = {}
    coverage = "cluster_coverage" in ec.metrics and num_classes and not (labels < 0).any()
    predicted = None
    if coverage and PREDICTOR in ec.embedders:   # one labeller for every space's agreement
        predictor = cached_embedder(PREDICTOR, device, (weights or {}).get(PREDICTOR))
        predicted = predictor.predict(images)
    for name in ec.embedders:
        emb = cached_embedder(name, device, (weights or {}).get(name))
        metrics.update(evaluate_space(images, emb, features[name], labels, subset, ec, seed,
                                      num_classes, reference=reference[name],
                                      reference_labels=reference_labels,
                                      centroids=(centroids or {}).get(name),
                                      train_nn=(train_nn or {}).get(name),
                                      predicted_labels=predicted))
    if coverage:
        metrics.update(subset_shares(labels[subset], num_classes))
    return metrics


def subset_shares(subset_labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """``subset_share_<c>``: the share of class c among the training subset's true labels.

    Args:
        subset_labels: (n_train,) int64 labels of the images the trial trained on.
        num_classes: C.

    Returns:
        {"subset_share_<c>": share for c in range(C)}.
    """
    shares = label_distribution(subset_labels, num_classes)
    return {f"subset_share_{c}": float(shares[c]) for c in range(num_classes)}


def evaluate_space(images: np.ndarray, emb: Any, features: np.ndarray, labels: np.ndarray,
                   subset: np.ndarray, ec: EvalConfig, seed: int, num_classes: int, *,
                   reference: np.ndarray,
                   reference_labels: np.ndarray | None = None,
                   centroids: np.ndarray | None = None,
                   train_nn: np.ndarray | None = None,
                   predicted_labels: np.ndarray | None = None) -> dict[str, float]:
    """Configured metrics of generated images in one space, against the held-out reference.

    Args:
        images: (M, H, W, 3) uint8 generated images.
        emb: the space's embedder (``models.Embedder``: ``emb(images) -> (B, D)``, ``emb.short``).
        features: (N, D) features of the whole training set in this space.
        labels, subset, ec, seed, num_classes, reference_labels: as :func:`evaluate`.
        reference: (R, D) features of the held-out reference in this space.
        centroids: (k, D) :func:`training_centroids` of ``features`` (``ec.centroids_k``),
            or None to compute them here.
        train_nn: (N,) ``eval.memorization.train_nn_distances`` of ``features`` (the
            copy rate's threshold), or None to compute them here.
        predicted_labels: (M,) int64 the classifier's predicted class of each image, or
            None (in the classifier space: its own ``predict``).

    Returns:
        metric name -> value, named ``metric_name(key, emb.short)``. With
        ``cluster_coverage`` and predicted classes, ``cov_label_agreement`` (the share of
        samples whose predicted class is this space's nearest-neighbour label); the
        predictor's own space (an embedder with ``predict``) also gives their shares,
        ``cov_pred_share_<c>``.
    """
    fake = np.concatenate([emb(images[s:s + 128]) for s in range(0, len(images), 128)])
    feats = features.astype(np.float32)
    real = np.asarray(reference, dtype=np.float32)
    if real.ndim != 2 or real.shape[0] == 0 or real.shape[1] != feats.shape[1]:
        raise ValueError(f"reference features of shape {real.shape} for training features "
                         f"of shape {feats.shape}")
    if reference_labels is not None and (np.asarray(reference_labels) < 0).any():
        reference_labels = None
    fake_labels = predicted = None
    if "cluster_coverage" in ec.metrics:
        if (labels < 0).any():
            raise ValueError("metric 'cluster_coverage' needs a labelled dataset")
        # label each sample by its nearest neighbour in a class-balanced labelled set, so a
        # skewed dataset's large classes get no head start
        bal = balanced_indices(labels, np.random.default_rng(seed))
        fake_labels = nearest_neighbour_labels(feats[bal], labels[bal], fake)
        if callable(getattr(emb, "predict", None)):      # the predictor's own space
            predicted = predicted_labels if predicted_labels is not None else emb.predict(images)
    if "memorization" not in ec.metrics or not ec.centroids_k:
        centroids = None
    elif centroids is None:
        centroids = training_centroids(feats, ec.centroids_k)
    inputs = MetricInputs(real=real, fake=fake, train=feats[subset], train_full=feats,
                          reference_labels=reference_labels, num_classes=num_classes or None,
                          fake_labels=fake_labels, prdc_k=ec.prdc_k, centroids=centroids,
                          train_nn=train_nn, copy_quantile=ec.copy_quantile,
                          predicted_labels=predicted)
    metrics: dict[str, float] = {}
    for name in ec.metrics:
        for key, value in METRICS[name](inputs).items():
            metrics[metric_name(key, emb.short)] = float(value)
    if fake_labels is not None and predicted is None and predicted_labels is not None:
        # another space: only the agreement (the predicted shares are the predictor space's)
        metrics[metric_name("cov_label_agreement", emb.short)] = label_agreement(
            predicted_labels, fake_labels)
    return metrics


def training_centroids(features: np.ndarray, k: int, seed: int = CENTROID_SEED) -> np.ndarray:
    """Centres of a seeded k-means of the FULL training set's L2-normalized features.

    The same centres for every trial of a dataset and space, whatever its method: the
    distance of a trial's samples to them (``mem_centroid_nn_mean``) asks whether a model
    collapses onto cluster centres (the paper's open question for clustering pruning).
    They are computed in each evaluation space (``eval.embedders``), with
    :data:`CENTROID_SEED`, never the experiment seed the clustering methods select with:
    in a space no method selects in (the ``classifier``) they are independent of every
    selection; in a selection space they are still another k-means run.

    Args:
        features: (N, D) training-set features of one space.
        k: clusters (capped at N).
        seed: the k-means seed (default :data:`CENTROID_SEED`).

    Returns:
        (min(k, N), D) float32 centres.
    """
    normed = l2_normalize(np.asarray(features, dtype=np.float32), "train_full").astype(np.float32)
    centres, _, _ = kmeans(normed, min(int(k), len(normed)), seed=seed)
    return np.asarray(centres, dtype=np.float32)


def save_sample_grid(cache: ArtifactCache, key: str, images: np.ndarray) -> None:
    """The first 64 images as an 8x8 PNG grid, cached as bytes under ``key``."""
    with tempfile.TemporaryDirectory() as d:
        path = write_grid(images[:64], os.path.join(d, "samples.png"), nrow=8)
        with open(path, "rb") as f:
            cache.save_bytes(key, f.read())
