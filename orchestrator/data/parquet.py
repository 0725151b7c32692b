"""The ``parquet`` source: images stored as encoded bytes in parquet files (Hugging Face
``datasets`` exports, LAION-style shards), local or ``s3://`` / ``gs://``.

Params (``data.datasets[i]``):

- ``path``: a ``.parquet`` file, a folder of them (recursive; ``_``/``.`` names left out) or
  a glob (``s3://bucket/train-*.parquet``).
- ``image_column`` (default ``image``): encoded image bytes (binary), or a struct with a
  ``bytes`` field, as Hugging Face ``datasets`` writes its ``Image`` feature.
- ``label_column`` (optional): integer labels (nulls are -1); without it the data is
  unlabelled.
- ``key_column`` (optional): the sample's key (cast to text); without it the key is
  ``<file relative to path>:<row index in that file>``. Keys must be unique.

Each row's ``uri`` is ``<file uri>#<row index>``. Files are read by Ray Data read tasks
(``runtime.ray_read``), row group by row group with only the needed columns, so a file's row
index is known (which ``ray.data.read_parquet`` does not give). A file that does not
open or lacks a column is one bad row (key: the file), a row without bytes or with
undecodable bytes is a bad row; none stops the run. Held-out share, ``limit`` and
fingerprint: ``orchestrator.data.stream``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.data import DatasetConfig
from orchestrator.data.listing import Inputs
from orchestrator.data.stream import StreamingSource, rows_table, transient
from orchestrator.errors import ConfigError
from orchestrator.storage import fsutil

BATCH_ROWS = 256       # rows per block read from a row group


def image_bytes(column: Any, name: str) -> list[bytes | None]:
    """The encoded bytes of an image column: binary, or a struct with a ``bytes`` field.

    Raises:
        ValueError: the column holds neither (the message names its type).
    """
    if pa.types.is_struct(column.type):
        if column.type.get_field_index("bytes") < 0:
            raise ValueError(f"column {name!r} is a struct without a 'bytes' field "
                             f"({column.type})")
        column = column.field("bytes")
    if not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
        raise ValueError(f"column {name!r} holds {column.type}, not encoded image bytes "
                         "(binary, or a struct with a 'bytes' field)")
    return column.to_pylist()


@dataclass(frozen=True)
class ParquetReader:
    """Reads one parquet file into reader rows (``orchestrator.data.stream``)."""

    image_column: str = "image"
    label_column: str | None = None
    key_column: str | None = None
    retried: tuple[str, ...] = ()     # error messages the read task retries (stream.transient)
    random_access: ClassVar[bool] = True

    def columns(self, keys_only: bool) -> list[str]:
        cols = [c for c in (self.key_column, self.label_column) if c]
        return cols if keys_only else cols + [self.image_column]

    def rows(self, f: Any, rel: str, uri: str, keys_only: bool) -> Iterator[Any]:
        """Blocks of rows ``{key, uri, data, label, error}`` of the file ``f``."""
        try:
            pf = pq.ParquetFile(f)
            missing = [c for c in self.columns(False) if c not in pf.schema_arrow.names]
        except Exception as e:   # not a parquet file, corrupt footer
            if transient(e, self.retried):
                raise
            yield rows_table([rel], [uri], [None], [-1], [f"unreadable parquet file: {e}"])
            return
        if missing:
            yield rows_table([rel], [uri], [None], [-1], [f"no column {missing[0]!r} in {rel}"])
            return
        if keys_only and not self.columns(True):   # keys from the row counts alone
            n = pf.metadata.num_rows
            for s in range(0, n, 65536):
                rows = range(s, min(n, s + 65536))
                yield rows_table([f"{rel}:{r}" for r in rows], [f"{uri}#{r}" for r in rows],
                                 [None] * len(rows), [-1] * len(rows), [""] * len(rows))
            return
        offset = 0
        batches = pf.iter_batches(batch_size=BATCH_ROWS, columns=self.columns(keys_only))
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as e:   # a corrupt page: the rest of the file is one bad row
                if transient(e, self.retried):
                    raise        # Ray's read task retries the file
                yield rows_table([f"{rel}:{offset}"], [f"{uri}#{offset}"], [None], [-1],
                                 [f"unreadable parquet data from row {offset}: {e}"])
                return
            yield self._block(batch, rel, uri, offset, keys_only)
            offset += batch.num_rows

    def _block(self, batch: Any, rel: str, uri: str, offset: int, keys_only: bool) -> Any:
        n = batch.num_rows
        rows = range(offset, offset + n)
        keys = [f"{rel}:{r}" for r in rows]
        if self.key_column:
            given = batch.column(self.key_column).cast(pa.string()).to_pylist()
            keys = [k if k is not None else d for k, d in zip(given, keys)]
        errors = [""] * n
        labels = [-1] * n
        if self.label_column:
            try:
                raw = batch.column(self.label_column).cast(pa.int64()).to_pylist()
                labels = [-1 if v is None else v for v in raw]
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                errors = [f"label column {self.label_column!r} is not integer: {e}"] * n
        data: list[bytes | None] = [None] * n
        if not keys_only:
            try:
                data = image_bytes(batch.column(self.image_column), self.image_column)
            except ValueError as e:
                errors = [str(e)] * n
            errors = [e or ("no image bytes" if d is None else "")
                      for e, d in zip(errors, data)]
        return rows_table(keys, [f"{uri}#{r}" for r in rows], data, labels, errors)


class ParquetSource(StreamingSource):
    """Parquet files of encoded images (Hugging Face ``datasets`` exports, LAION-style
    shards): a file, folder or glob, local or ``s3://`` / ``gs://``; ``image_column``,
    optional ``label_column`` and ``key_column`` (details: the module docstring)."""

    name = "parquet"
    suffixes = (".parquet", ".pq")
    what = "parquet file(s)"
    label_hint = "set label_column"

    def labelled(self, ds: DatasetConfig) -> bool:
        return ds.label_column is not None

    def reader(self, ds: DatasetConfig) -> ParquetReader:
        return ParquetReader(ds.image_column, ds.label_column, ds.key_column)

    def check_inputs(self, ds: DatasetConfig, inputs: Inputs, key: str) -> None:
        """The configured columns exist in the first file, and the image column holds bytes."""
        fs, root = fsutil.filesystem(inputs.root)
        first = inputs.files[0]
        try:
            with fs.open_input_file(f"{root}/{first}") as f:
                schema = pq.read_schema(f)
        except Exception as e:
            raise ConfigError(f"{key}.path: {inputs.uri(first)}: not a readable parquet file "
                              f"({e})") from None
        for field in ("image_column", "label_column", "key_column"):
            col = getattr(ds, field)
            if col is not None and col not in schema.names:
                raise ConfigError(f"{key}.{field}: no column {col!r} in {inputs.uri(first)} "
                                  f"(columns: {', '.join(schema.names)})")
        try:
            image_bytes(pa.array([], schema.field(ds.image_column).type), ds.image_column)
        except ValueError as e:
            raise ConfigError(f"{key}.image_column: {e}") from None
