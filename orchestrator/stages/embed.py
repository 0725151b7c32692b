"""Embed stage: a Ray Data actor pool runs each configured embedder over the images.

Output per (dataset, embedder): raw ``(N, D)`` float32 features in id order (the
libraries normalize where their method says so), cached by the data fingerprint,
the embedder name and its weight file. The ``classifier`` space is first trained here,
once per dataset, on the dataset's labelled training images
(:func:`ensure_trained_spaces`; cached by the data fingerprint and ``eval.classifier``).

The held-out reference (``orchestrator.data.sources.reference_data``, capped at
``eval.num_real``) is embedded here too, by every evaluation embedder: arrays ``ids``,
``labels``, ``features`` under a ``reference`` key of its own fingerprint, the
embedder and its weights (:func:`ensure_reference`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from orchestrator.config.schema import TRAINED_SPACE
from orchestrator.progress import say
from orchestrator.runtime.cluster import collect_by_id, map_actor_pool
from orchestrator.runtime.resources import ResourcePlan
from orchestrator.storage.cache import ArtifactCache
from orchestrator.training.spaces import fit_classifier, local_weights

EMBED_VERSION = 1
CLASSIFIER_VERSION = 1
REFERENCE_VERSION = 1


@dataclass(frozen=True)
class Reference:
    """A dataset's embedded held-out reference.

    Attributes:
        keys: eval embedder name -> cache key (arrays ``ids`` (R,), ``labels`` (R,),
            ``features`` (R, D) float32).
        origin: where the images come from, in words (``reference_origin``).
        size: R, the number of reference images.
    """

    keys: dict[str, str]
    origin: str
    size: int


class EmbedActor:
    """Ray Data actor: uint8 images -> (B, D) float32 features of one embedder.

    ``weights_key``: cache key of a trained space's weight file (the classifier), fetched
    to a local file here; otherwise ``weights`` is a local weight file or None.
    """

    def __init__(self, name: str, weights: str | None, device: str, threads: int,
                 cache_root: str | None = None, weights_key: str | None = None):
        import torch

        from models import build_embedder

        torch.set_num_threads(max(1, threads))
        if weights_key:
            with local_weights(ArtifactCache(cache_root), {name: weights_key}) as paths:
                self.embedder = build_embedder(name, device=device, weights=paths[name])
        else:
            self.embedder = build_embedder(name, device=device, weights=weights)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feats = self.embedder(np.ascontiguousarray(batch["image"]))
        out = {"id": batch["id"], "features": np.asarray(feats, dtype=np.float32)}
        if "label" in batch:
            out["label"] = batch["label"]
        return out


def embed_key(cache: ArtifactCache, fingerprint: str, name: str, weights: str | None) -> str:
    return cache.key("embed", EMBED_VERSION, fingerprint=fingerprint, embedder=name, weights=weights)


def reference_key(cache: ArtifactCache, fingerprint: str, name: str, weights: str | None) -> str:
    return cache.key("reference", REFERENCE_VERSION, fingerprint=fingerprint, embedder=name,
                     weights=weights)


def needed_embedders(cfg: Any) -> list[str]:
    """Configured embedders plus those pruning methods and the evaluation spaces ask for."""
    names = list(cfg.embed.embedders)
    for m in cfg.pruning.methods:
        for ds in cfg.data.datasets:
            emb = m.build_pruner(ds.name).embedder
            if emb:
                names.append(emb)
    names.extend(cfg.eval.embedders)
    return list(dict.fromkeys(names))


def classifier_key(cache: ArtifactCache, fingerprint: str, cc: Any) -> str:
    """Cache key of a dataset's classifier space: bytes = weight file, json = its info."""
    return cache.key("classifier", CLASSIFIER_VERSION, fingerprint=fingerprint, recipe=asdict(cc))


def ensure_trained_spaces(cache: ArtifactCache, cfg: Any, source: Any, ds_cfg: Any,
                          fresh: bool) -> dict[str, dict]:
    """Train the classifier space on the dataset's labelled training images when needed.

    Runs on the driver (a small CNN: ~1 min on a CPU at the default recipe).

    Returns:
        ``{"classifier": {"weights": cache key, "test_accuracy", "n_train", "n_test",
        "test_set"}}``, or ``{}`` when no configured space is trained.
    """
    if TRAINED_SPACE not in needed_embedders(cfg):
        return {}
    key = classifier_key(cache, source.fingerprint, cfg.eval.classifier)
    if not fresh and cache.has(key, "json") and cache.has(key, "bytes"):
        info = cache.load_json(key)
        say("embed[%s/%s]: cached (%s)", ds_cfg.name, TRAINED_SPACE, key)
    else:
        import torch

        from orchestrator.data.sources import load_arrays

        arrays = load_arrays(ds_cfg)
        cc = cfg.eval.classifier
        say("embed[%s/%s]: training on %d labelled images for %d steps", ds_cfg.name,
            TRAINED_SPACE, round(len(arrays.ids) * (1 - cc.test_share)), cc.steps)
        blob, info = fit_classifier(arrays.images, arrays.labels, arrays.num_classes, cc,
                                    "cuda" if torch.cuda.is_available() else "cpu")
        cache.save_bytes(key, blob)
        cache.save_json(key, info)   # written last: marks the artifact complete
    say("embed[%s/%s]: test accuracy %.4f (%s)", ds_cfg.name, TRAINED_SPACE,
        info["test_accuracy"], info["test_set"])
    return {TRAINED_SPACE: {"weights": key, **info}}


def _space_weights(cfg: Any, trained: dict[str, dict] | None, name: str) -> tuple[str | None, str | None]:
    """(local weight file from ``embed.weights``, cache key of a trained space's weights)."""
    return cfg.embed.weights.get(name), (trained or {}).get(name, {}).get("weights")


def _embed_pass(cache: ArtifactCache, cfg: Any, dataset: Any, name: str, plan: ResourcePlan,
                trained: dict[str, dict] | None, columns: list[str]) -> dict[str, np.ndarray]:
    """One Ray Data actor-pool pass of embedder ``name``: ``{id, *columns}`` in id order.

    No ``select_columns`` (a Project operator): see stages/encode.py:ensure_vqvae.
    """
    weights, weights_key = _space_weights(cfg, trained, name)
    out = map_actor_pool(dataset, EmbedActor,
                         {"name": name, "weights": weights,
                          "device": "cuda" if plan.actor_gpus else "cpu",
                          "threads": plan.actor_threads, "cache_root": cache.root,
                          "weights_key": weights_key},
                         plan, cfg.embed.batch_size)
    return collect_by_id(out, columns)


def ensure_embeddings(cache: ArtifactCache, cfg: Any, source: Any, ds_cfg: Any,
                      plan: ResourcePlan, fresh: bool,
                      trained: dict[str, dict] | None = None) -> dict[str, str]:
    """Cache keys of the features of every needed embedder (arrays ``ids``, ``features``).

    ``trained``: :func:`ensure_trained_spaces`' result (weight files of trained spaces).
    """
    keys = {}
    for name in needed_embedders(cfg):
        weights, weights_key = _space_weights(cfg, trained, name)
        key = keys[name] = embed_key(cache, source.fingerprint, name, weights or weights_key)
        if not fresh and cache.has(key, "arrays"):
            say("embed[%s/%s]: cached (%s)", ds_cfg.name, name, key)
            continue
        cols = _embed_pass(cache, cfg, source.dataset, name, plan, trained, ["features"])
        if len(cols["id"]) != source.count:
            raise RuntimeError(f"embed[{ds_cfg.name}/{name}]: {len(cols['id'])} features "
                               f"for {source.count} images")
        cache.save_arrays(key, ids=cols["id"].astype(np.int64),
                          features=cols["features"].astype(np.float32))
        say("embed[%s/%s]: %s features", ds_cfg.name, name, cols["features"].shape)
    return keys


def ensure_reference(cache: ArtifactCache, cfg: Any, ds_cfg: Any, plan: ResourcePlan,
                     fresh: bool, trained: dict[str, dict] | None = None) -> Reference:
    """Embed the held-out reference of ``ds_cfg`` in every evaluation space (cached).

    ``trained``: :func:`ensure_trained_spaces`' result (weight files of trained spaces).
    """
    from orchestrator.data.sources import reference_data, reference_origin

    source = reference_data(ds_cfg, cfg.eval.num_real)
    origin = reference_origin(ds_cfg)
    keys = {}
    for name in cfg.eval.embedders:
        weights, weights_key = _space_weights(cfg, trained, name)
        key = keys[name] = reference_key(cache, source.fingerprint, name, weights or weights_key)
        if not fresh and cache.has(key, "arrays"):
            say("reference[%s/%s]: cached (%s)", ds_cfg.name, name, key)
            continue
        cols = _embed_pass(cache, cfg, source.dataset, name, plan, trained, ["label", "features"])
        if len(cols["id"]) == 0:
            raise RuntimeError(f"reference[{ds_cfg.name}]: no readable image in {origin}")
        cache.save_arrays(key, ids=cols["id"].astype(np.int64),
                          labels=cols["label"].astype(np.int64),
                          features=cols["features"].astype(np.float32))
        say("reference[%s/%s]: %s features of %s", ds_cfg.name, name, cols["features"].shape,
            origin)
    size = int(cache.load_arrays(next(iter(keys.values())))["ids"].shape[0])
    return Reference(keys, origin, size)


def check_embedders(cfg: Any) -> None:
    """Build every needed embedder once on the driver: a missing weight file is a
    one-line config error now, not a failure in each Ray actor and trial later."""
    from models import MissingWeightsError, build_embedder
    from orchestrator.errors import ConfigError

    for name in needed_embedders(cfg):
        if name == TRAINED_SPACE:   # trained in this stage: no weight file to check
            continue
        try:
            build_embedder(name, device="cpu", weights=cfg.embed.weights.get(name))
        except MissingWeightsError as e:
            raise ConfigError(f"embed.weights.{name}: {e}") from None
