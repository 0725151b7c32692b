"""A source's rows in this process: the local executor's stand-in for a Ray dataset.

:class:`LocalRows` holds the row contract of every source (``{id, key, uri, image, label,
error}``, see :mod:`orchestrator.data.sources`) as numpy columns in id order and hands
them out in batches, as ``map_batches`` would. :func:`local_source` builds a
:class:`~orchestrator.data.base.SourceData` on it from the source's in-memory arrays
(``Source.arrays``): the same ids, labels and fingerprint as the Ray view, so both
executors share one cache. Unreadable files, which the arrays list apart, become bad rows
again (``error`` set, a zero image) so the encode stage lists and counts them the same
way. Meant for modest datasets (tests, a laptop, debugging a stage): every image is in
memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from orchestrator.data import DatasetConfig
from orchestrator.data.base import SourceArrays, SourceData, key_id
from orchestrator.data.sources import SOURCES

COLUMNS = ("id", "key", "uri", "image", "label", "error")


@dataclass(frozen=True)
class LocalRows:
    """Rows as columns: ``id`` (N,) int64, ``key``/``uri``/``error`` (N,) object str,
    ``image`` (N, R, R, 3) uint8, ``label`` (N,) int64."""

    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.columns["id"])

    def iter_batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Consecutive batches of ``batch_size`` rows (the last one shorter)."""
        for start in range(0, len(self), max(1, int(batch_size))):
            yield {c: v[start:start + batch_size] for c, v in self.columns.items()}

    def good(self) -> "LocalRows":
        """The rows that decoded (``error == ""``)."""
        ok = np.array([not e for e in self.columns["error"]], dtype=bool)
        return LocalRows({c: v[ok] for c, v in self.columns.items()})

    def take(self, names: list[str]) -> list[np.ndarray]:
        """The named columns, in order."""
        return [self.columns[c] for c in names]


def rows_from_arrays(arrays: SourceArrays) -> LocalRows:
    """The good rows of ``arrays`` (keys ``str(id)`` when it has none), then one bad row per
    skipped file (``key`` its path, ``error`` its reason), ordered by id."""
    n = len(arrays.ids)
    keys, uris = arrays.keys_and_uris()
    bad = arrays.skipped
    size = arrays.images.shape[1:] if arrays.images.ndim == 4 else (0, 0, 3)
    cols = {
        "id": np.concatenate([arrays.ids.astype(np.int64),
                              np.array([key_id(s.path) for s in bad], np.int64)]),
        "key": np.concatenate([keys.astype(object), np.array([s.path for s in bad], object)]),
        "uri": np.concatenate([uris.astype(object), np.array([s.path for s in bad], object)]),
        "image": np.concatenate([arrays.images, np.zeros((len(bad), *size), np.uint8)]),
        "label": np.concatenate([arrays.labels.astype(np.int64), np.full(len(bad), -1, np.int64)]),
        "error": np.concatenate([np.full(n, "", object),
                                 np.array([s.reason for s in bad], object)]),
    }
    order = np.argsort(cols["id"], kind="stable")
    return LocalRows({c: v[order] for c, v in cols.items()})


def local_source(ds: DatasetConfig, role: str = "train", cap: int | None = None) -> SourceData:
    """``ds``'s rows of ``role`` (``train`` or ``reference``, at most ``cap``) in memory."""
    arrays = SOURCES[ds.source].arrays(ds, role, cap)
    rows = rows_from_arrays(arrays)
    # the skipped files are rows now (the encode stage lists them), not a separate list
    return SourceData(ds.name, rows, arrays.fingerprint, len(rows),
                      arrays.num_classes if role == "train" else None)
