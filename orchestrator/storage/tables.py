"""Sharded tables in the artifact store: a dataset's per-sample arrays as parquet parts.

A stage that produces one row per sample (the encode stage's latents, the embed stage's
features) writes its output where it is computed: each Ray worker turns its batch into one
parquet **part** with :func:`write_part` and returns only the part's small description; the
driver then writes the table's **index** with :func:`finish_table`, last, so a table is
complete exactly when its index exists. Nothing per-sample travels through the driver::

    meta = write_part(cache, key, "part-000", {"id": ids, "latent": z})   # in a worker
    finish_table(cache, key, [meta, ...], {"num_classes": 10})            # on the driver
    z = Table(cache, key).read(["latent"], ids=subset_ids)["latent"]      # anywhere

Layout: parts are cache artifacts of kind ``parquet`` under ``<key>/<name>`` (each with
its checksum sidecar), the index is the ``json`` artifact of ``key``. Columns: ``id``
(int64, required), numbers of any row shape (an ``(N, C, h, w)`` array is stored as a
fixed-size list of ``C*h*w`` values with its row shape in the index) and strings. Readers
use pyarrow alone (no Ray), one part at a time, reading only the columns they ask for.
"""

from __future__ import annotations

import io
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.storage.cache import ArtifactCache

TABLE_FORMAT = 1


def _column(values: np.ndarray) -> tuple[pa.Array, list[int] | None]:
    """A numpy column as an Arrow array, and its row shape when it has more than one axis."""
    values = np.asarray(values)
    if values.dtype.kind in "OUS":
        return pa.array([str(v) for v in values], type=pa.string()), None
    if values.ndim == 1:
        return pa.array(values), None
    shape = list(values.shape[1:])
    flat = np.ascontiguousarray(values).reshape(len(values), -1)
    inner = pa.array(flat.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(inner, flat.shape[1]), shape


def write_part(cache: ArtifactCache, key: str, name: str,
               columns: dict[str, np.ndarray]) -> dict[str, Any]:
    """Write one part of table ``key`` (called where the rows are computed).

    Args:
        cache: the artifact store.
        key: the table's cache key.
        name: the part's name, unique within the table (e.g. from its first id).
        columns: equal-length arrays; ``id`` (B,) int64 is required.

    Returns:
        The part's description for :func:`finish_table`: ``name``, ``rows``, ``id_min``,
        ``id_max`` and ``shapes`` (row shape of each multi-axis column).
    """
    if "id" not in columns:
        raise ValueError("a table part needs an 'id' column")
    ids = np.asarray(columns["id"], dtype=np.int64)
    arrays, shapes = {}, {}
    for col, values in columns.items():
        if len(values) != len(ids):
            raise ValueError(f"column {col!r} has {len(values)} rows, 'id' has {len(ids)}")
        arrays[col], shape = _column(ids if col == "id" else values)
        if shape is not None:
            shapes[col] = shape
    buf = io.BytesIO()
    pq.write_table(pa.table(arrays), buf)
    cache.put(f"{key}/{name}", "parquet", buf.getvalue())
    return {"name": name, "rows": int(len(ids)),
            "id_min": int(ids.min()) if len(ids) else 0,
            "id_max": int(ids.max()) if len(ids) else -1, "shapes": shapes}


def finish_table(cache: ArtifactCache, key: str, parts: list[dict[str, Any]],
                 meta: dict[str, Any] | None = None) -> None:
    """Write the index of table ``key`` (last: it marks the table complete).

    Raises:
        ValueError: two parts share a name or disagree on a column's row shape.
    """
    names = [p["name"] for p in parts]
    if len(set(names)) != len(names):
        raise ValueError(f"table {key}: duplicate part names")
    shapes: dict[str, list[int]] = {}
    for p in parts:
        for col, shape in p.get("shapes", {}).items():
            if shapes.setdefault(col, shape) != shape:
                raise ValueError(f"table {key}: column {col!r} has rows of shape {shape} "
                                 f"and {shapes[col]}")
    ordered = sorted((p for p in parts if p["rows"]), key=lambda p: (p["id_min"], p["name"]))
    cache.save_json(key, {"format": TABLE_FORMAT, "rows": int(sum(p["rows"] for p in parts)),
                          "parts": [{k: p[k] for k in ("name", "rows", "id_min", "id_max")}
                                    for p in ordered],
                          "shapes": shapes, "meta": meta or {}})


class Table:
    """A finished table (its index is read on construction).

    Attributes:
        rows: the number of rows.
        parts: the parts' descriptions, ordered by their smallest id.
        meta: what the writer put in the index (e.g. ``num_classes``, ``skipped``).
    """

    def __init__(self, cache: ArtifactCache, key: str):
        self.cache, self.key = cache, key
        index = cache.load_json(key)
        self.rows: int = int(index["rows"])
        self.parts: list[dict[str, Any]] = index["parts"]
        self.meta: dict[str, Any] = index.get("meta", {})
        self._shapes: dict[str, list[int]] = index.get("shapes", {})

    @staticmethod
    def exists(cache: ArtifactCache, key: str) -> bool:
        """Whether table ``key`` is complete (its index is present)."""
        return cache.has(key, "json")

    def shape(self, column: str) -> tuple[int, ...]:
        """The row shape of ``column`` (``()`` for scalars and strings)."""
        return tuple(self._shapes.get(column, ()))

    def _load(self, part: dict[str, Any], columns: list[str]) -> dict[str, np.ndarray]:
        data = self.cache.get(f"{self.key}/{part['name']}", "parquet")
        tab = pq.read_table(io.BytesIO(data), columns=columns)
        out = {}
        for col in columns:
            arr = tab.column(col).combine_chunks()
            if pa.types.is_fixed_size_list(arr.type):
                values = arr.flatten().to_numpy(zero_copy_only=False)
                out[col] = values.reshape((len(arr), *self.shape(col)))
            elif pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
                out[col] = np.array(arr.to_pylist(), dtype=object)
            else:
                out[col] = arr.to_numpy(zero_copy_only=False)
        return out

    def iter_parts(self, columns: list[str]) -> Iterator[dict[str, np.ndarray]]:
        """Each part's ``id`` and ``columns``, one part in memory at a time."""
        cols = list(dict.fromkeys(["id", *columns]))
        for part in self.parts:
            yield self._load(part, cols)

    def read(self, columns: list[str], ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``id`` and ``columns`` of every row, or of the rows ``ids``, sorted by id.

        Parts whose id range misses every wanted id are not read.

        Raises:
            KeyError: an id in ``ids`` is not in the table.
        """
        want = None if ids is None else np.unique(np.asarray(ids, dtype=np.int64))
        pieces: list[dict[str, np.ndarray]] = []
        cols = list(dict.fromkeys(["id", *columns]))
        for part in self.parts:
            if want is not None:
                lo = int(np.searchsorted(want, part["id_min"], side="left"))
                if lo >= len(want) or want[lo] > part["id_max"]:
                    continue   # no wanted id in this part's range
            got = self._load(part, cols)
            if want is not None:
                mask = np.isin(got["id"], want)
                got = {c: v[mask] for c, v in got.items()}
            pieces.append(got)
        out = {c: (np.concatenate([p[c] for p in pieces]) if pieces
                   else np.zeros((0, *self.shape(c)))) for c in cols}
        out["id"] = out["id"].astype(np.int64)
        order = np.argsort(out["id"], kind="stable")
        out = {c: v[order] for c, v in out.items()}
        if want is not None and len(out["id"]) != len(want):
            missing = np.setdiff1d(want, out["id"])
            raise KeyError(f"table {self.key}: {len(missing)} id(s) not found, e.g. {missing[0]}")
        return out

    def column(self, name: str) -> np.ndarray:
        """One column of every row in id order (a convenience over :meth:`read`)."""
        return self.read([name])[name]
