"""Embed stage: the executor's pass (a Ray Data actor pool, or one actor here) runs each
configured embedder over the images.

Output per (dataset, embedder): raw ``(N, D)`` float32 features in id order (the
libraries normalize where their method says so), cached by the data fingerprint,
the embedder name and its weight file. The ``classifier`` space is first trained here,
once per dataset, on the dataset's labelled training images
(:func:`ensure_trained_spaces`; cached by the data fingerprint and ``eval.classifier``).

The held-out reference (``Executor.source(ds, "reference", cap)``, capped at
``eval.num_real``) is embedded here too, by every evaluation embedder: arrays ``ids``,
``labels``, ``features`` under a ``reference`` key of its own fingerprint, the
embedder and its weights (:func:`ensure_reference`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from models import MissingWeightsError, build_embedder
from models.weights import weights_fingerprint
from orchestrator.config.schema import TRAINED_SPACE, Config, DatasetConfig
from orchestrator.data.sources import reference_origin
from orchestrator.errors import ConfigError, SourceError
from orchestrator.progress import say
from orchestrator.runtime.executor import Executor, join_columns
from orchestrator.storage.cache import ArtifactCache
from orchestrator.storage.tables import Table, finish_table, write_part
from orchestrator.training.spaces import fit_classifier, local_weights
from orchestrator.weights import needed_embedders

EMBED_VERSION = 2       # 2: tables of parts written by the embed actors
CLASSIFIER_VERSION = 1
REFERENCE_VERSION = 2   # 2: a table (id, label, features)


@dataclass(frozen=True)
class Reference:
    """A dataset's embedded held-out reference.

    Attributes:
        keys: eval embedder name -> key of a table with ``id``, ``label`` and
            ``features`` (D,) float32 per reference image.
        origin: where the images come from, in words (``reference_origin``).
        size: R, the number of reference images.
    """

    keys: dict[str, str]
    origin: str
    size: int


class EmbedActor:
    """Ray Data actor: a batch of source rows -> one part of a features table.

    Writes ``id``, ``features`` (D,) float32 (and ``label`` with ``with_labels``) of the
    batch's good rows where it runs (:func:`orchestrator.storage.tables.write_part`) and
    returns one row, ``report`` = JSON of the part's description.

    ``weights_key``: cache key of a trained space's weight file (the classifier), fetched
    to a local file here; otherwise ``weights`` is a local weight file or None.
    """

    def __init__(self, name: str, weights: str | None, device: str, threads: int,
                 cache_root: str, table_key: str, weights_key: str | None = None,
                 with_labels: bool = False):
        torch.set_num_threads(max(1, threads))
        self.cache, self.table_key, self.with_labels = ArtifactCache(cache_root), table_key, with_labels
        if weights_key:
            with local_weights(ArtifactCache(cache_root), {name: weights_key}) as paths:
                self.embedder = build_embedder(name, device=device, weights=paths[name])
        else:
            self.embedder = build_embedder(name, device=device, weights=weights)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = _good(batch)
        report: dict = {"part": None}
        if len(batch["id"]):
            feats = np.asarray(self.embedder(np.ascontiguousarray(batch["image"])), np.float32)
            ids = np.asarray(batch["id"], dtype=np.int64)
            cols = {"id": ids, "features": feats}
            if self.with_labels:
                cols["label"] = np.asarray(batch["label"], dtype=np.int64)
            report["part"] = write_part(self.cache, self.table_key, f"part-{ids.min():020d}",
                                        cols)
        return {"report": np.array([json.dumps(report)], dtype=object)}


def _good(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The batch's good rows (the encode stage lists the bad ones)."""
    if "error" not in batch:
        return batch
    ok = np.array([not e for e in batch["error"]], dtype=bool)
    return {k: v[ok] for k, v in batch.items()}


def embed_key(cache: ArtifactCache, fingerprint: str, name: str, weights: str | None) -> str:
    return cache.key("embed", EMBED_VERSION, fingerprint=fingerprint, embedder=name, weights=weights)


def reference_key(cache: ArtifactCache, fingerprint: str, name: str, weights: str | None) -> str:
    return cache.key("reference", REFERENCE_VERSION, fingerprint=fingerprint, embedder=name,
                     weights=weights)


def classifier_key(cache: ArtifactCache, fingerprint: str, cc: Any) -> str:
    """Cache key of a dataset's classifier space: bytes = weight file, json = its info."""
    return cache.key("classifier", CLASSIFIER_VERSION, fingerprint=fingerprint, recipe=asdict(cc))


def ensure_trained_spaces(cache: ArtifactCache, cfg: Config, source: Any, ds_cfg: DatasetConfig,
                          fresh: bool, executor: Executor,
                          num_classes: int | None = None) -> dict[str, dict]:
    """Train the classifier space on the dataset's labelled training images when needed.

    Runs as one of the executor's tasks (on Ray: a task with a trial worker's resources;
    a small CNN, ~1 min on a CPU at the default recipe); on Ray the images reach it as block
    refs, never through the driver.
    ``num_classes``: the dataset's classes (default: the source's).

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
        cc = cfg.eval.classifier
        say("embed[%s/%s]: training on the labelled images for %d steps", ds_cfg.name,
            TRAINED_SPACE, cc.steps)
        rows = executor.gather(executor.good_rows(source.dataset), ["id", "image", "label"])
        k = source.num_classes if num_classes is None else num_classes
        blob, info = executor.run_tasks(_fit_classifier_task,
                                        [(rows, k, cc, executor.plan.solo_threads)],
                                        f"classifier-{ds_cfg.name}")[0]
        cache.save_bytes(key, blob)
        cache.save_json(key, info)   # written last: marks the artifact complete
    say("embed[%s/%s]: test accuracy %.4f (%s)", ds_cfg.name, TRAINED_SPACE,
        info["test_accuracy"], info["test_set"])
    return {TRAINED_SPACE: {"weights": key, **info}}


def _fit_classifier_task(rows: Any, num_classes: int, cc: Any, threads: int) -> tuple[bytes, dict]:
    """In a task: the classifier space on the good rows (``Executor.gather``'d), in id order.

    ``threads``: torch's intra-op threads, set here because a reused Ray worker process
    keeps what an earlier task set (the VQ-VAE's task sets its own), and the thread count
    changes the float sums: without it a one-node and a multi-node run of the same config
    trained different classifiers (tests/test_multinode.py, 2026-12-05)."""
    torch.set_num_threads(max(1, int(threads)))
    ids, images, labels = join_columns(rows)
    order = np.argsort(ids, kind="stable")
    return fit_classifier(images[order], labels[order].astype(np.int64), num_classes, cc,
                          "cuda" if torch.cuda.is_available() else "cpu")


def _space_weights(cfg: Config, trained: dict[str, dict] | None, name: str) -> tuple[str | None, str | None]:
    """(local weight file from ``embed.weights``, cache key of a trained space's weights)."""
    return cfg.embed.weights.get(name), (trained or {}).get(name, {}).get("weights")


def weights_identity(cfg: Config, trained: dict[str, dict] | None, name: str) -> str | None:
    """What names an embedder's weights in cache keys: a trained space's weight-file key
    (content-addressed already), else the sha256 of the file the embedder loads (local
    path, HF cache or package: ``models.weights.weights_fingerprint``), None for none."""
    weights, weights_key = _space_weights(cfg, trained, name)
    return weights_key or weights_fingerprint(name, weights)


def _embed_pass(cache: ArtifactCache, cfg: Config, dataset: Any, name: str, executor: Executor,
                trained: dict[str, dict] | None, key: str, with_labels: bool = False) -> int:
    """One pass of embedder ``name`` over ``dataset`` writing table ``key``; its rows.

    No ``select_columns`` (a Project operator): see stages/encode.py:train_vqvae.
    """
    weights, weights_key = _space_weights(cfg, trained, name)
    plan = executor.plan
    reports = executor.map_rows(dataset, EmbedActor,
                                {"name": name, "weights": weights,
                                 "device": "cuda" if plan.actor_gpus else "cpu",
                                 "threads": plan.actor_threads, "cache_root": cache.root,
                                 "table_key": key, "weights_key": weights_key,
                                 "with_labels": with_labels}, cfg.embed.batch_size)
    parts = [r["part"] for r in reports if r["part"]]
    finish_table(cache, key, parts)
    return sum(p["rows"] for p in parts)


def ensure_embeddings(cache: ArtifactCache, cfg: Config, source: Any, ds_cfg: DatasetConfig,
                      executor: Executor, fresh: bool,
                      trained: dict[str, dict] | None = None,
                      count: int | None = None) -> dict[str, str]:
    """Keys of the features tables (``id``, ``features`` (D,) float32) of every needed
    embedder.

    ``trained``: :func:`ensure_trained_spaces`' result (weight files of trained spaces);
    ``count``: the good rows the encode stage found (each table must have as many).
    """
    keys = {}
    for name in needed_embedders(cfg):
        key = keys[name] = embed_key(cache, source.fingerprint, name,
                                     weights_identity(cfg, trained, name))
        if not fresh and Table.exists(cache, key):
            say("embed[%s/%s]: cached (%s)", ds_cfg.name, name, key)
            continue
        rows = _embed_pass(cache, cfg, source.dataset, name, executor, trained, key)
        if count is not None and rows != count:
            raise RuntimeError(f"embed[{ds_cfg.name}/{name}]: {rows} features for {count} "
                               "encoded images")
        say("embed[%s/%s]: %d features of dimension %s", ds_cfg.name, name, rows,
            Table(cache, key).shape("features"))
    return keys


def ensure_reference(cache: ArtifactCache, cfg: Config, ds_cfg: DatasetConfig,
                     executor: Executor, fresh: bool,
                     trained: dict[str, dict] | None = None) -> Reference:
    """Embed the held-out reference of ``ds_cfg`` in every evaluation space (cached).

    ``trained``: :func:`ensure_trained_spaces`' result (weight files of trained spaces).
    """
    source = executor.source(ds_cfg, "reference", cfg.eval.num_real)
    origin = reference_origin(ds_cfg)
    keys = {}
    for name in cfg.eval.embedders:
        key = keys[name] = reference_key(cache, source.fingerprint, name,
                                         weights_identity(cfg, trained, name))
        if not fresh and Table.exists(cache, key):
            say("reference[%s/%s]: cached (%s)", ds_cfg.name, name, key)
            continue
        rows = _embed_pass(cache, cfg, source.dataset, name, executor, trained, key, True)
        if rows == 0:
            raise SourceError(f"reference[{ds_cfg.name}]: no readable image in {origin}")
        say("reference[%s/%s]: %d features of %s", ds_cfg.name, name, rows, origin)
    size = Table(cache, next(iter(keys.values()))).rows
    return Reference(keys, origin, size)


def check_embedders(cfg: Config) -> None:
    """Build every needed embedder once on the driver: a missing weight file is a
    one-line config error now, not a failure in each Ray actor and trial later."""
    for name in needed_embedders(cfg):
        if name == TRAINED_SPACE:   # trained in this stage: no weight file to check
            continue
        try:
            build_embedder(name, device="cpu", weights=cfg.embed.weights.get(name))
        except MissingWeightsError as e:
            raise ConfigError(f"embed.weights.{name}: {e}") from None
