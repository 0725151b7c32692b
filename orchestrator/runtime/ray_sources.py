"""The sources' Ray Data views: what :meth:`RayExecutor.source` gives the stages.

Every source gives rows ``{id, key, uri, image (R, R, 3) uint8, label, error}`` (the
contract of :mod:`orchestrator.data.sources`); how they become a ``ray.data.Dataset``
depends on its kind, and this module alone turns them into one (``orchestrator.data``
imports no Ray):

- **array sources** (Fashion-MNIST, digits, ``LabelledArraySource``): the in-memory arrays
  as Arrow tensor blocks (:func:`arrays_to_ray`; every row good).
- **folders** (``FolderSource``: image folders, CelebA-HQ, ImageNet): the selected files'
  rows (``file_rows``), decoded by Ray tasks where they are read
  (``folders.decode_file_batch``); a bad file keeps its row with ``error`` set.
- **streaming sources** (``StreamingSource``: parquet, webdataset): Ray's read tasks stream
  every file through the source's reader (:mod:`orchestrator.runtime.ray_read`); ``limit``
  and the reference cap first find the k-th smallest rank hash in a keys-only pass
  (:func:`threshold`), then the decode pass keeps the rows at or below it
  (:func:`decode_rows`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pyarrow as pa
import ray.data
from ray.data.context import DataContext
from ray.data.extensions import ArrowTensorArray

from orchestrator.data import DatasetConfig
from orchestrator.data.base import Source, SourceArrays, SourceData, key_id
from orchestrator.data.folders import FolderSource, decode_file_batch
from orchestrator.data.sources import SOURCES
from orchestrator.data.stream import Selection, StreamingSource, decode_or_error, ranks
from orchestrator.runtime.ray_read import read_rows


def arrays_to_ray(arrays: SourceArrays, rows_per_block: int = 2048) -> Any:
    """A ray.data.Dataset of rows ``{id, key, uri, image, label, error}`` over in-memory
    arrays (Arrow tensor columns, no copies per row); every row is good (``error`` "").
    Arrays without keys get ``str(id)`` keys and empty uris."""
    n = len(arrays.ids)
    keys, uris = arrays.keys_and_uris()
    tables = []
    for s in range(0, max(n, 1), rows_per_block):
        sl = slice(s, s + rows_per_block)
        m = len(arrays.ids[sl])
        tables.append(pa.table({"id": pa.array(arrays.ids[sl], pa.int64()),
                                "key": pa.array(list(keys[sl]), pa.string()),
                                "uri": pa.array(list(uris[sl]), pa.string()),
                                "image": ArrowTensorArray.from_numpy(arrays.images[sl]),
                                "label": pa.array(arrays.labels[sl], pa.int64()),
                                "error": pa.array([""] * m, pa.string())}))
    return ray.data.from_arrow(tables)


def threshold(keys: Any, sel: Selection, k: int) -> tuple[int | None, int]:
    """(threshold, count) of ``stream.smallest`` over a Ray dataset of keys, batch by batch
    (``O(k)`` driver memory)."""
    best = np.zeros(0, np.int64)
    total = 0
    ranked = keys.map_batches(ranks, fn_kwargs={"sel": sel, "k": k}, batch_format="numpy")
    for batch in ranked.iter_batches(batch_size=65536, batch_format="numpy"):
        total += len(batch["rank"])
        best = np.concatenate([best, batch["rank"]])
        if len(best) > k:
            best = np.partition(best, k - 1)[:k]
    return (None, total) if total <= k else (int(best.max()), k)


def decode_rows(batch: dict[str, np.ndarray], sel: Selection, size: int) -> Any:
    """map_batches fn: reader rows -> the selected rows ``{id, key, uri, image (B, R, R, 3)
    uint8, label, error}`` as a ``pyarrow.Table``; a bad row keeps a zero image."""
    keep = np.flatnonzero(sel.mask(batch["key"]))
    images = np.zeros((len(keep), size, size, 3), np.uint8)
    errors = []
    for j, i in enumerate(keep):
        img, err = decode_or_error(batch["data"][i], str(batch["error"][i] or ""), size)
        errors.append(err)
        if img is not None:
            images[j] = img
    keys = [str(batch["key"][i]) for i in keep]
    return pa.table({"id": pa.array([key_id(k) for k in keys], pa.int64()),
                     "key": pa.array(keys, pa.string()),
                     "uri": pa.array([str(batch["uri"][i]) for i in keep], pa.string()),
                     "image": ArrowTensorArray.from_numpy(images),
                     "label": pa.array(batch["label"][keep], pa.int64()),
                     "error": pa.array(errors, pa.string())})


def streaming_view(src: StreamingSource, ds: DatasetConfig, role: str,
                   cap: int | None) -> SourceData:
    """A streaming source's rows of ``role``: ``count`` known when ``limit`` / ``cap``
    forced the keys-only pass, else None."""
    # the reader re-raises what Ray Data's read task retries (stream.transient)
    retried = tuple(DataContext.get_current().retried_io_errors)
    inputs, reader = src.inputs(ds), dataclasses.replace(src.reader(ds), retried=retried)
    sel, count = src.selection(ds, role), None
    k = ds.limit if role == "train" else cap
    if k is not None:
        limit, count = threshold(read_rows(inputs, reader, keys_only=True), sel, k)
        sel = src.selection(ds, role, limit)
    dataset = read_rows(inputs, reader).map_batches(
        decode_rows, fn_kwargs={"sel": sel, "size": ds.resolution}, batch_format="numpy",
        batch_size=64)
    return SourceData(ds.name, dataset, src.stream_fingerprint(ds, role, cap, inputs), count,
                      None if src.labelled(ds) else 0)


def folder_view(src: FolderSource, ds: DatasetConfig, role: str, cap: int | None) -> SourceData:
    """A folder's selected files, decoded by Ray tasks (64 a batch)."""
    tables, uri, fp, count, num_classes = src.file_rows(ds, role, cap)
    dataset = ray.data.from_arrow(tables).map_batches(
        decode_file_batch, fn_kwargs={"uri": uri, "size": ds.resolution}, batch_size=64,
        batch_format="numpy")
    return SourceData(ds.name, dataset, fp, count, num_classes, ())


def ray_view(src: Source, ds: DatasetConfig, role: str = "train",
             cap: int | None = None) -> SourceData:
    """The Ray Data view of ``src``'s rows of ``role`` (``train``, or ``reference`` capped
    at ``cap``): the same ids, keys, labels and fingerprint as ``src.arrays``."""
    if isinstance(src, StreamingSource):
        return streaming_view(src, ds, role, cap)
    if isinstance(src, FolderSource):
        return folder_view(src, ds, role, cap)
    arrays = src.arrays(ds, role, cap)
    return SourceData(ds.name, arrays_to_ray(arrays), arrays.fingerprint, len(arrays.ids),
                      arrays.num_classes, arrays.skipped)


def load_dataset(ds: DatasetConfig) -> SourceData:
    """The Ray Data view of ``ds``'s training rows (same ids, labels and fingerprint as
    ``orchestrator.data.sources.load_arrays``)."""
    return ray_view(SOURCES[ds.source], ds)


def reference_data(ds: DatasetConfig, cap: int | None = None) -> SourceData:
    """The Ray Data view of ``ds``'s held-out reference (as ``load_reference``)."""
    return ray_view(SOURCES[ds.source], ds, "reference", cap)
