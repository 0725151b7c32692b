"""Dataset sources: images with stable int64 ids and keys, labels and a content fingerprint.

Every source gives rows ``{id: int64, key: str, uri: str, image: uint8 (R, R, 3), label:
int64 (-1 = unlabelled), error: str ("" = good)}``: in memory here (``load_arrays``,
``Source.arrays``; the local executor's rows, ``data/local_rows.py``), or as a Ray Data
dataset (``orchestrator.runtime.ray_sources``: the Ray executor's view; this package
imports no Ray). ``key`` names the sample outside the tool
(folder: path relative to ``path``; IDX: ``<split>/<index>``; digits: ``digits/<index>``;
webdataset: the ``__key__``; parquet: ``key_column``, else ``<file>:<row>``), ``uri``
says where its bytes are. A bad file, row or member stays in the stream with ``error``
set and a zero image (the consuming stage lists them and applies ``data.max_skipped``).
``load_arrays(dataset_cfg) -> SourceArrays`` gives the good rows as numpy arrays
(``keys``, ``uris`` included; bad ones listed in ``skipped``) for in-memory use.

Every entry also has a **held-out reference** (``load_reference``; on Ray ``reference_data``,
described by ``reference_origin``): Fashion-MNIST's ``test`` split, ImageNet's ``val``
split, and for digits, image folders and CelebA-HQ a seeded ``holdout`` share removed
before anything else (see ``orchestrator.data.base``); for the streaming sources
(``parquet``, ``webdataset``) the share is chosen by a hash of (seed, key), see
``orchestrator.data.stream``. No training, proxy, scoring or selection sees it; the
metrics compare against it, capped at ``eval.num_real``.

Ids of the listed sources are the position of an image in its source (the IDX file,
sklearn's digits, the sorted file listing), so they stay stable when ``limit`` / ``skew``
subsets or skipped files change; streaming sources use ``key_id(key)``. Subsets of the
listed sources are drawn from ``numpy.random.default_rng`` seeded by the entry's
``seed``: ``skew`` first (per-label keep fractions), then ``limit`` (uniform).
Fashion-MNIST 28x28 and digits 8x8 are resized with a bilinear filter (not zero-padded:
padding adds a constant border the VQ-VAE and the feature extractors would see as
content); folders and the streaming sources use the ADM/DiT centre-crop resize.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from orchestrator.data import DatasetConfig
from orchestrator.data.base import (LabelledArraySource, SkippedFile, Source, SourceArrays,
                                    SourceData, fingerprint, key_id, select_subset)
from orchestrator.data.folders import CelebAHQ, ImageFolder, ImageNet
from orchestrator.data.images import read_idx
from orchestrator.data.parquet import ParquetSource
from orchestrator.data.webdataset import WebDatasetSource
from orchestrator.errors import ConfigError, SourceError

__all__ = ["SOURCES", "SkippedFile", "Source", "SourceArrays", "SourceData", "SourceError",
           "check_dataset", "count_note", "fingerprint", "key_id", "load_arrays",
           "load_reference", "reference_count", "reference_origin", "select_subset"]

log = logging.getLogger(__name__)

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                       "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


class FashionMNIST(LabelledArraySource):
    """Fashion-MNIST from its IDX files (Debian ``dataset-fashion-mnist`` by default)."""

    name = "fashion_mnist"
    splits = (None, "train", "test")   # None = train
    reference_split = "test"           # the reference; training on it is a config error

    def _files(self, ds: DatasetConfig) -> tuple[Path, Path]:
        root = Path(ds.path or FASHION_MNIST_DIR)
        found = []
        for stem in FASHION_MNIST_FILES[ds.split or "train"]:
            for cand in (root / f"{stem}.gz", root / stem):
                if cand.is_file():
                    found.append(cand)
                    break
            else:
                raise SourceError(f"no {stem}[.gz] in {root} (apt-get install "
                                  "dataset-fashion-mnist, or download the official IDX files)")
        return found[0], found[1]

    def raw_labels(self, ds: DatasetConfig) -> np.ndarray:
        try:
            return read_idx(self._files(ds)[1]).astype(np.int64)
        except ValueError as e:
            raise SourceError(str(e)) from None

    def names(self, ds: DatasetConfig, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keys ``<split>/<index>`` (``train/123``), uris ``<images idx file>#<index>``."""
        split, img_file = ds.split or "train", str(self._files(ds)[0])
        return (np.array([f"{split}/{i}" for i in positions], dtype=object),
                np.array([f"{img_file}#{i}" for i in positions], dtype=object))

    def raw(self, ds: DatasetConfig) -> tuple[np.ndarray, np.ndarray]:
        img_file, lab_file = self._files(ds)
        try:
            images, labels = read_idx(img_file), read_idx(lab_file).astype(np.int64)
        except ValueError as e:
            raise SourceError(str(e)) from None
        if images.ndim != 3 or len(images) != len(labels):
            raise SourceError(f"{img_file}: {images.shape} images for {len(labels)} labels")
        return images, labels


class Digits(LabelledArraySource):
    """scikit-learn's bundled 8x8 digits (1,797 images, no download): for tests."""

    name = "digits"
    splits = (None, "all")

    def names(self, ds: DatasetConfig, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keys ``digits/<index>``, uris ``sklearn:digits#<index>``."""
        return (np.array([f"digits/{i}" for i in positions], dtype=object),
                np.array([f"sklearn:digits#{i}" for i in positions], dtype=object))

    def raw(self, ds: DatasetConfig) -> tuple[np.ndarray, np.ndarray]:
        # lazy: sklearn.datasets costs ~1.5 s to import; only the digits source reads it
        from sklearn.datasets import load_digits

        d = load_digits()
        images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)   # values 0..16
        return images, d.target.astype(np.int64)


def check_dataset(ds: DatasetConfig, key: str) -> int | None:
    """Validate one dataset entry; returns its image count when cheap to know."""
    if ds.source not in SOURCES:
        raise ConfigError(f"{key}.source: unknown name {ds.source!r} "
                          f"(valid: {', '.join(sorted(SOURCES))})")
    return SOURCES[ds.source].check(ds, key)


def count_note(ds: DatasetConfig) -> str:
    """Why :func:`check_dataset` gives no image count, in words (``--dry-run``): e.g.
    "more than 10,000 objects under s3://b/p: counted at run time"."""
    return SOURCES[ds.source].count_note(ds)


def load_arrays(ds: DatasetConfig) -> SourceArrays:
    """All selected images of ``ds`` in memory (see the module docstring)."""
    return SOURCES[ds.source].arrays(ds)


def load_reference(ds: DatasetConfig, cap: int | None = None) -> SourceArrays:
    """The held-out reference of ``ds`` in memory, at most ``cap`` images (seeded).

    Its ids are positions in the reference's own split (Fashion-MNIST ``test``, ImageNet
    ``val``) or, for a held-out share, in the same listing as the training ids (the two
    sets are disjoint). Its fingerprint names the role, the origin and the cap.
    """
    return SOURCES[ds.source].arrays(ds, "reference", cap)


def reference_origin(ds: DatasetConfig) -> str:
    """Where the reference of ``ds`` comes from, in words."""
    return SOURCES[ds.source].reference_origin(ds)


def reference_count(ds: DatasetConfig, cap: int | None = None) -> int | None:
    """Images in the reference of ``ds`` after the cap, or None when not cheap to know."""
    return SOURCES[ds.source].reference_count(ds, cap)


SOURCES: dict[str, Source] = {
    "fashion_mnist": FashionMNIST(),
    "digits": Digits(),
    "image_folder": ImageFolder(),
    "imagenet": ImageNet(),
    "celeba_hq": CelebAHQ(),
    "parquet": ParquetSource(),
    "webdataset": WebDatasetSource(),
}
