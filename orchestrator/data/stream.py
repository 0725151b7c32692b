"""Streaming sources (``parquet``, ``webdataset``): rows read where they lie, selected by key.

A streaming source lists its **files** (``listing.list_inputs``), never its rows on the
driver. On Ray (``orchestrator.runtime.ray_sources``), Ray Data's read tasks
(``runtime.ray_read.RowsDatasource``) stream each file through the source's *reader* into
rows ``{key, uri, data, label, error}``; one ``map_batches`` step selects the rows of the
role and decodes their images (``ray_sources.decode_rows``) into the row contract of every
source: ``{id, key, uri, image, label, error}`` with ``id = key_id(key)``. Without Ray,
:meth:`StreamingSource.arrays` reads the same rows in this process.

Selection needs no listing of rows either: it is a function of the key.

- **Held-out reference**: a row is held out when the hash of (dataset seed, key) falls in
  the first ``holdout`` share of the hash range (about ``holdout`` of the rows, exactly
  the same rows on every run and every worker).
- **limit** (training) and the reference **cap** (``eval.num_real``) keep the ``k`` rows of
  the role with the smallest hash of (seed, stream, key): a first pass over the keys only
  (``ray_sources.threshold``, a running partition of batch hashes on the driver, ``O(k)``
  memory) finds the k-th smallest hash; the decode pass keeps the rows at or below it. That pass
  also counts the rows, so ``SourceData.count`` is known when ``limit`` (or a cap) is set,
  else None.
- ``skew`` is not supported (a one-line ConfigError): exact per-label fractions would need
  the labels of every row before reading.

Bad data never raises: an unreadable file, a bad row or a bad member is a row with
``error`` set (and a zero image); the consuming stage lists and counts them. The
fingerprint hashes the settings and the file listing (paths and sizes), not rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import numpy as np
import pyarrow as pa

from orchestrator.data import DatasetConfig
from orchestrator.data.base import (CAP_STREAM, HOLDOUT_STREAM, LIMIT_STREAM, SkippedFile, Source,
                                    SourceArrays, key_id)
from orchestrator.data.images import decode_image
from orchestrator.data.listing import Inputs, list_inputs
from orchestrator.errors import ConfigError, SourceError
from orchestrator.storage import fsutil

log = logging.getLogger(__name__)

HASH_RANGE = 2 ** 63                     # key_id values lie in [0, 2**63)


def rows_table(keys: list[str], uris: list[str], data: list[bytes | None], labels: list[int],
               errors: list[str]) -> Any:
    """One block of reader rows as a ``pyarrow.Table`` (binary ``data``, null when absent)."""
    return pa.table({"key": pa.array(keys, pa.string()), "uri": pa.array(uris, pa.string()),
                     "data": pa.array(data, pa.binary()), "label": pa.array(labels, pa.int64()),
                     "error": pa.array(errors, pa.string())})


def transient(error: BaseException, patterns: tuple[str, ...]) -> bool:
    """Whether ``error`` is a transient object-store error that the read task retries:
    its message contains one of ``patterns`` (a reader's ``retried``: on Ray, Ray Data's
    ``DataContext.retried_io_errors``, set by ``runtime.ray_sources``; none in this
    process). Readers re-raise those, and turn every other read error into a bad row."""
    return any(p in str(error) for p in patterns)


@dataclass(frozen=True)
class Selection:
    """Which rows of a streaming source a role takes (see the module docstring).

    ``threshold``: keep rows whose ``stream`` hash is at most this (None: every row of
    the role).
    """

    seed: int
    holdout: float
    role: str
    threshold: int | None = None

    @property
    def stream(self) -> int:
        return LIMIT_STREAM if self.role == "train" else CAP_STREAM

    def hashes(self, keys: Any) -> tuple[np.ndarray, np.ndarray]:
        """(in_role (N,) bool, rank hash (N,) int64) of ``keys``."""
        cut = int(self.holdout * HASH_RANGE)
        hold = np.array([key_id(f"{self.seed}/{HOLDOUT_STREAM}/{k}") for k in keys], np.int64)
        rank = np.array([key_id(f"{self.seed}/{self.stream}/{k}") for k in keys], np.int64)
        return (hold < cut) if self.role == "reference" else (hold >= cut), rank

    def mask(self, keys: Any) -> np.ndarray:
        """(N,) bool: the rows of ``keys`` this selection keeps."""
        in_role, rank = self.hashes(keys)
        return in_role if self.threshold is None else in_role & (rank <= self.threshold)


def ranks(batch: dict[str, np.ndarray], sel: Selection, k: int) -> dict[str, np.ndarray]:
    """map_batches fn: the (at most ``k``) smallest rank hashes of the batch's role rows."""
    in_role, rank = sel.hashes(batch["key"])
    rank = rank[in_role]
    if len(rank) > k:
        rank = np.partition(rank, k - 1)[:k]
    return {"rank": rank.astype(np.int64)}


def smallest(ranks: np.ndarray, k: int) -> tuple[int | None, int]:
    """(threshold, count): the k-th smallest of ``ranks`` (None when there are at most k,
    then every row is kept) and the number of rows kept."""
    if len(ranks) <= k:
        return None, len(ranks)
    return int(np.partition(ranks, k - 1)[k - 1]), k


def decode_or_error(data: bytes | None, error: str, size: int) -> tuple[np.ndarray | None, str]:
    if error:
        return None, error
    try:
        return decode_image(data or b"", size), ""
    except (ValueError, OSError) as e:
        return None, str(e)


class StreamingSource(Source):
    """Base of the sources read by key from files (``parquet``, ``webdataset``)."""

    suffixes: ClassVar[tuple[str, ...]]
    what: ClassVar[str]                   # "files", "shards"

    def reader(self, ds: DatasetConfig) -> Any:
        """The picklable reader of ``ds``'s files (``rows``, ``random_access``)."""
        raise NotImplementedError

    def inputs(self, ds: DatasetConfig) -> Inputs:
        if not ds.path:
            raise SourceError(f"dataset {ds.name}: path is required for source {self.name}")
        return list_inputs(ds.path, self.suffixes)

    def check_inputs(self, ds: DatasetConfig, inputs: Inputs, key: str) -> None:
        """Source-specific checks of the listed files (e.g. the parquet columns)."""

    def check(self, ds: DatasetConfig, key: str) -> int | None:
        if not ds.path:
            raise ConfigError(f"{key}.path: required for source {self.name}")
        if ds.skew:
            raise ConfigError(f"{key}.skew: not supported for the streaming source {self.name} "
                              "(set limit, or prepare the skewed files)")
        super().check(ds, key)
        try:
            inputs = self.inputs(ds)
        except ValueError as e:    # SourceError and a bad URI scheme
            raise ConfigError(f"{key}.path: {e}") from None
        self.check_inputs(ds, inputs, key)
        return ds.limit

    def count_note(self, ds: DatasetConfig) -> str:
        try:
            inputs = self.inputs(ds)
        except ValueError as e:
            return f"unknown ({e})"
        size = sum(inputs.sizes) / 1e6
        return (f"counted at run time ({len(inputs.files):,} {self.what}, {size:,.1f} MB, "
                f"less the held-out share {ds.holdout:g})")

    def selection(self, ds: DatasetConfig, role: str, threshold: int | None = None) -> Selection:
        return Selection(ds.seed, ds.holdout, role, threshold)

    def stream_fingerprint(self, ds: DatasetConfig, role: str, cap: int | None,
                           inputs: Inputs) -> str:
        """sha256 of the settings, the reader and the file listing (paths, sizes)."""
        h = hashlib.sha256()
        settings = {"source": ds.source, "resolution": ds.resolution, "limit": ds.limit,
                    "seed": ds.seed, "holdout": ds.holdout, "role": role, "cap": cap,
                    "reader": {k: v for k, v in dataclasses.asdict(self.reader(ds)).items()
                               if k != "retried"}}   # where it runs, not what it reads
        h.update(json.dumps(settings, sort_keys=True).encode())
        for rel, size in zip(inputs.files, inputs.sizes):
            h.update(f"{rel}\t{size}\n".encode())
        return h.hexdigest()

    def _read_local(self, inputs: Inputs, reader: Any) -> Iterator[Any]:
        """The reader's blocks of every file, in the driver (the in-memory path)."""
        fs, root = fsutil.filesystem(inputs.root)
        for rel in inputs.files:
            path = f"{root}/{rel}"
            opener = fs.open_input_file if reader.random_access else fs.open_input_stream
            with opener(path) as f:
                yield from reader.rows(f, rel, inputs.uri(rel), False)

    def arrays(self, ds: DatasetConfig, role: str = "train",
               cap: int | None = None) -> SourceArrays:
        """Every selected row in memory, read in the driver (modest datasets); bad rows are
        left out and listed in ``skipped``."""
        inputs, reader = self.inputs(ds), self.reader(ds)
        sel = self.selection(ds, role)
        cols: dict[str, list] = {"key": [], "uri": [], "data": [], "label": [], "error": []}
        ranks = []
        for table in self._read_local(inputs, reader):
            in_role, rank = sel.hashes(table.column("key").to_pylist())
            idx = np.flatnonzero(in_role)
            part = table.take(idx).to_pydict()
            for c in cols:
                cols[c] += part[c]
            ranks.append(rank[idx])
        rank = np.concatenate(ranks) if ranks else np.zeros(0, np.int64)
        k = ds.limit if role == "train" else cap
        keep = np.arange(len(rank))
        if k is not None:
            limit, _ = smallest(rank, k)
            keep = keep if limit is None else np.flatnonzero(rank <= limit)
        workers = min(8, (os.cpu_count() or 1) * 2)
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda i: decode_or_error(
                cols["data"][i], cols["error"][i] or "", ds.resolution), keep))
        good = [j for j, (img, _) in enumerate(results) if img is not None]
        skipped = tuple(SkippedFile(cols["key"][keep[j]], err)
                        for j, (img, err) in enumerate(results) if img is None)
        for s in skipped:
            log.warning("skipping %s: %s", s.path, s.reason)
        rows = keep[good]
        ids = np.array([key_id(cols["key"][i]) for i in rows], np.int64)
        order = np.argsort(ids, kind="stable")
        images = (np.stack([results[j][0] for j in good]) if good
                  else np.zeros((0, ds.resolution, ds.resolution, 3), np.uint8))[order]
        labels = np.array([cols["label"][i] for i in rows], np.int64)[order]
        keys = np.array([cols["key"][i] for i in rows], dtype=object)[order]
        uris = np.array([cols["uri"][i] for i in rows], dtype=object)[order]
        num_classes = int(labels.max(initial=-1)) + 1 if self.labelled(ds) else 0
        return SourceArrays(ids[order], images, labels,
                            self.stream_fingerprint(ds, role, cap, inputs), num_classes,
                            skipped, keys=keys, uris=uris)
