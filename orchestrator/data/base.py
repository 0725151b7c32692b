"""Shared pieces of the data sources: result types, subset selection, fingerprints.

See ``orchestrator.data.sources`` for the registry and the user-facing description.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from orchestrator.config.schema import DatasetConfig
from orchestrator.data.images import gray_to_rgb, resize_batch
from orchestrator.errors import ConfigError, SourceError

FINGERPRINT_SAMPLES = 32


@dataclass(frozen=True)
class SkippedFile:
    """A file that could not be decoded: ``path`` relative to the dataset root."""

    path: str
    reason: str


@dataclass(frozen=True)
class SourceArrays:
    ids: np.ndarray            # (N,) int64, sorted
    images: np.ndarray         # (N, R, R, 3) uint8
    labels: np.ndarray         # (N,) int64, -1 = unlabelled
    fingerprint: str           # sha256 hex; names every downstream artifact
    num_classes: int           # 0 when unlabelled
    skipped: tuple[SkippedFile, ...] = ()


@dataclass(frozen=True)
class SourceData:
    name: str
    dataset: Any               # ray.data.Dataset of {id, image, label}
    fingerprint: str
    count: int
    num_classes: int
    skipped: tuple[SkippedFile, ...] = ()


def select_subset(labels: np.ndarray, ds: DatasetConfig) -> np.ndarray:
    """Positions kept by ``skew`` (per label) then ``limit`` (uniform), sorted int64.

    ``skew`` maps a label (or ``"*"`` for every other label) to the fraction of that
    label's images kept, ``round(n_label * fraction)`` of them.
    """
    n = len(labels)
    keep = np.arange(n, dtype=np.int64)
    if ds.skew:
        rng = np.random.default_rng(np.random.SeedSequence([ds.seed, 1]))
        default = ds.skew.get("*", 1.0)
        parts = []
        for label in np.unique(labels):
            members = keep[labels == label]
            frac = ds.skew.get(str(int(label)), default)
            m = int(round(len(members) * frac))
            parts.append(np.sort(rng.choice(members, size=m, replace=False)))
        keep = np.sort(np.concatenate(parts)) if parts else keep
    if ds.limit is not None and ds.limit < len(keep):
        rng = np.random.default_rng(np.random.SeedSequence([ds.seed, 2]))
        keep = np.sort(rng.choice(keep, size=ds.limit, replace=False))
    return keep


def fingerprint(ds: DatasetConfig, ids: np.ndarray, labels: np.ndarray,
                blobs: list[bytes], extra: str = "") -> str:
    """sha256 of the subset (ids, labels, count), a bytes sample and the settings."""
    h = hashlib.sha256()
    settings = {"source": ds.source, "split": ds.split, "resolution": ds.resolution,
                "limit": ds.limit, "skew": ds.skew, "seed": ds.seed, "count": int(len(ids)),
                "class_subfolders": ds.class_subfolders}
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update(np.ascontiguousarray(ids, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    for b in blobs:
        h.update(hashlib.sha256(b).digest())
    h.update(extra.encode())
    return h.hexdigest()


def sample_positions(n: int, k: int = FINGERPRINT_SAMPLES) -> np.ndarray:
    """Up to ``k`` evenly spaced positions in ``range(n)`` (the fingerprint sample)."""
    return np.unique(np.linspace(0, n - 1, num=min(n, k)).astype(np.int64)) if n else np.zeros(0, np.int64)


def arrays_to_ray(arrays: SourceArrays, rows_per_block: int = 2048) -> Any:
    """A ray.data.Dataset over in-memory arrays (Arrow tensor columns, no copies per row)."""
    import pyarrow as pa
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    tables = []
    for s in range(0, max(len(arrays.ids), 1), rows_per_block):
        sl = slice(s, s + rows_per_block)
        tables.append(pa.table({"id": pa.array(arrays.ids[sl]),
                                "image": ArrowTensorArray.from_numpy(arrays.images[sl]),
                                "label": pa.array(arrays.labels[sl])}))
    return ray.data.from_arrow(tables)


class Source:
    """Base class; subclasses fill ``arrays`` and may override the Ray path."""

    name: ClassVar[str]
    splits: ClassVar[tuple[str | None, ...] | None] = None   # None = any string

    def labelled(self, ds: DatasetConfig) -> bool:
        return True

    def check(self, ds: DatasetConfig, key: str) -> int | None:
        """Raise ConfigError (key-prefixed) for a bad entry; the image count if cheap."""
        if self.splits is not None and ds.split not in self.splits:
            raise ConfigError(f"{key}.split: {ds.split!r} is not one of "
                              f"{', '.join(str(s) for s in self.splits)} for {self.name}")
        if not self.labelled(ds):
            if ds.conditional:
                raise ConfigError(f"{key}.conditional: {self.name} here has no labels "
                                  "(set class_subfolders: true or conditional: false)")
            if ds.skew:
                raise ConfigError(f"{key}.skew: needs labels, which {self.name} here lacks")
        return ds.limit

    def arrays(self, ds: DatasetConfig) -> SourceArrays:
        raise NotImplementedError

    def __call__(self, ds: DatasetConfig) -> SourceData:
        arrays = self.arrays(ds)
        return SourceData(ds.name, arrays_to_ray(arrays), arrays.fingerprint,
                          len(arrays.ids), arrays.num_classes, arrays.skipped)


class LabelledArraySource(Source):
    """Sources held as small numpy arrays: ``raw`` gives native images and labels."""

    def raw_labels(self, ds: DatasetConfig) -> np.ndarray:
        return self.raw(ds)[1]

    def raw(self, ds: DatasetConfig) -> tuple[np.ndarray, np.ndarray]:
        """(N, h, w) or (N, h, w, 3) uint8 images and (N,) int64 labels."""
        raise NotImplementedError

    def check(self, ds: DatasetConfig, key: str) -> int | None:
        super().check(ds, key)
        try:
            return len(select_subset(self.raw_labels(ds), ds))
        except SourceError as e:
            raise ConfigError(f"{key}.path: {e}") from None

    def arrays(self, ds: DatasetConfig) -> SourceArrays:
        images, labels = self.raw(ds)
        keep = select_subset(labels, ds)
        small = resize_batch(images[keep], ds.resolution)
        rgb = small if small.ndim == 4 else gray_to_rgb(small)
        labels = labels[keep].astype(np.int64)
        blobs = [rgb[i].tobytes() for i in sample_positions(len(keep))]
        return SourceArrays(keep, rgb, labels, fingerprint(ds, keep, labels, blobs),
                            num_classes=int(labels.max(initial=-1)) + 1)
