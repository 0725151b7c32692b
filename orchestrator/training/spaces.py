"""Evaluation spaces that are trained, not downloaded: the per-dataset ``classifier``.

The embed stage (:mod:`orchestrator.stages.embed`) trains one classifier per dataset
with :func:`fit_classifier` and caches its file; the embed actors and every trial read
it back with :func:`local_weights`. No Ray here.

Its test accuracy is measured on a seeded share of the labelled training images held
out of its training (``eval.classifier.test_share``), so the number needs nothing but
the training split and means the same for every source.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any, Iterator, Mapping

import numpy as np

from models.classifier import classifier_accuracy, save_classifier, train_classifier
from orchestrator.config.schema import ClassifierConfig
from orchestrator.storage.cache import ArtifactCache

CLASSIFIER_FILE = "classifier.pt"


def classifier_split(n: int, test_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train rows, test rows) of ``n`` images, both sorted; at least one of each.

    Raises:
        ValueError: fewer than two images.
    """
    if n < 2:
        raise ValueError(f"the classifier space needs at least 2 labelled images, got {n}")
    n_test = min(n - 1, max(1, round(n * test_share)))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def fit_classifier(images: np.ndarray, labels: np.ndarray, num_classes: int,
                   cc: ClassifierConfig, device: str = "cpu") -> tuple[bytes, dict[str, Any]]:
    """Train the classifier space on the labelled training images; measure it on the held-out share.

    Args:
        images: (N, R, R, 3) uint8 training images of the dataset.
        labels: (N,) int64 labels in [0, num_classes).
        num_classes: classes of the dataset.
        cc: recipe (steps, batch size, lr, test share, seed).
        device: torch device of the training.

    Returns:
        (the file of ``models.classifier.save_classifier`` as bytes, info): info holds
        ``test_accuracy`` (share in [0, 1]), ``n_train``, ``n_test``, ``test_set`` (words).
    """
    train, test = classifier_split(len(images), cc.test_share, cc.seed)
    model = train_classifier(images[train], labels[train], num_classes, steps=cc.steps,
                             batch_size=cc.batch_size, lr=cc.lr, seed=cc.seed, device=device)
    acc = classifier_accuracy(model, images[test], labels[test])
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, CLASSIFIER_FILE)
        save_classifier(model.cpu(), path)
        with open(path, "rb") as f:
            blob = f.read()
    info = {"test_accuracy": float(acc), "n_train": int(len(train)), "n_test": int(len(test)),
            "test_set": f"{len(test)} labelled training images held out of its training "
                        f"(eval.classifier.test_share {cc.test_share}, seed {cc.seed})"}
    return blob, info


@contextlib.contextmanager
def local_weights(cache: ArtifactCache, keys: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """Local files of cached weight files (``{embedder: cache key}`` -> ``{embedder: path}``),
    deleted on exit (the cache may be a bucket; ``build_embedder`` wants a path)."""
    with tempfile.TemporaryDirectory() as d:
        paths = {}
        for name, key in keys.items():
            paths[name] = os.path.join(d, f"{name}.pt")
            with open(paths[name], "wb") as f:
                f.write(cache.load_bytes(key))
        yield paths
