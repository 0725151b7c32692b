"""Embed stage: a Ray Data actor pool runs each configured embedder over the images.

Output per (dataset, embedder): raw ``(N, D)`` float32 features in id order (the
libraries normalize where their method says so), cached by the data fingerprint,
the embedder name and its weight file.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from orchestrator.progress import say
from orchestrator.runtime.cluster import collect_by_id, map_actor_pool
from orchestrator.runtime.resources import ResourcePlan
from orchestrator.storage.cache import ArtifactCache

EMBED_VERSION = 1


class EmbedActor:
    """Ray Data actor: uint8 images -> (B, D) float32 features of one embedder."""

    def __init__(self, name: str, weights: str | None, device: str, threads: int):
        import torch

        from models import build_embedder

        torch.set_num_threads(max(1, threads))
        self.embedder = build_embedder(name, device=device, weights=weights)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feats = self.embedder(np.ascontiguousarray(batch["image"]))
        return {"id": batch["id"], "features": np.asarray(feats, dtype=np.float32)}


def embed_key(cache: ArtifactCache, fingerprint: str, name: str, weights: str | None) -> str:
    return cache.key("embed", EMBED_VERSION, fingerprint=fingerprint, embedder=name, weights=weights)


def needed_embedders(cfg: Any) -> list[str]:
    """Configured embedders plus those pruning methods and the evaluation ask for."""
    names = list(cfg.embed.embedders)
    for m in cfg.pruning.methods:
        for ds in cfg.data.datasets:
            emb = m.build_pruner(ds.name).embedder
            if emb:
                names.append(emb)
    names.append(cfg.eval.embedder)
    return list(dict.fromkeys(names))


def ensure_embeddings(cache: ArtifactCache, cfg: Any, source: Any, ds_cfg: Any,
                      plan: ResourcePlan, fresh: bool) -> dict[str, str]:
    """Cache keys of the features of every needed embedder (arrays ``ids``, ``features``)."""
    keys = {}
    device = "cuda" if plan.actor_gpus else "cpu"
    for name in needed_embedders(cfg):
        weights = cfg.embed.weights.get(name)
        key = embed_key(cache, source.fingerprint, name, weights)
        keys[name] = key
        if not fresh and cache.has(key, "arrays"):
            say("embed[%s/%s]: cached (%s)", ds_cfg.name, name, key)
            continue
        # No select_columns (a Project operator): see stages/encode.py:ensure_vqvae.
        out = map_actor_pool(source.dataset, EmbedActor,
                             {"name": name, "weights": weights, "device": device,
                              "threads": plan.actor_threads},
                             plan, cfg.embed.batch_size)
        cols = collect_by_id(out, ["features"])
        if len(cols["id"]) != source.count:
            raise RuntimeError(f"embed[{ds_cfg.name}/{name}]: {len(cols['id'])} features "
                               f"for {source.count} images")
        cache.save_arrays(key, ids=cols["id"].astype(np.int64),
                          features=cols["features"].astype(np.float32))
        say("embed[%s/%s]: %s features", ds_cfg.name, name, cols["features"].shape)
    return keys


def check_embedders(cfg: Any) -> None:
    """Build every needed embedder once on the driver: a missing weight file is a
    one-line config error now, not a failure in each Ray actor and trial later."""
    from models import MissingWeightsError, build_embedder
    from orchestrator.errors import ConfigError

    for name in needed_embedders(cfg):
        try:
            build_embedder(name, device="cpu", weights=cfg.embed.weights.get(name))
        except MissingWeightsError as e:
            raise ConfigError(f"embed.weights.{name}: {e}") from None
