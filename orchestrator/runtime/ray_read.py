"""The Ray Data reader of the streaming sources (the Ray executor's; see ``ray_sources``).

:class:`RowsDatasource` is a Ray Data ``FileBasedDatasource``: Ray's own read tasks
open the files (local, ``s3://``, ``gs://``, with Ray's retries) and stream blocks from a
source's reader (``reader.rows(f, rel, uri, keys_only)``, see
``orchestrator.data.stream``). The file list and sizes come from the source's own listing
(:class:`KnownFiles`), so nothing is listed twice. A file per read task at most; nothing
is gathered on the driver.
"""

from __future__ import annotations

from typing import Any, Iterator

import ray.data
from ray.data.datasource.file_based_datasource import FileBasedDatasource
from ray.data.datasource.file_meta_provider import DefaultFileMetadataProvider

from orchestrator.data.listing import Inputs
from orchestrator.storage import fsutil


class KnownFiles(DefaultFileMetadataProvider):
    """Metadata provider that returns the files and sizes already listed by the source."""

    def __init__(self, sizes: dict[str, int]):
        super().__init__()
        self.sizes = sizes

    def expand_paths(self, paths: list[str], filesystem: Any, partitioning: Any = None,
                     ignore_missing_paths: bool = False) -> Iterator[tuple[str, int]]:
        for p in paths:
            yield p, self.sizes.get(p)


class RowsDatasource(FileBasedDatasource):
    """Rows ``{key, uri, data, label, error}`` of a streaming source's files.

    Args:
        inputs: the listed files (root and relative paths).
        reader: the source's reader (picklable): ``rows(f, rel, uri, keys_only)`` yields
            ``pyarrow.Table`` blocks; ``random_access`` says whether it needs a seekable
            file (parquet) rather than a stream (tar).
        keys_only: read the keys (and row positions) only, not the image bytes.
    """

    def __init__(self, inputs: Inputs, reader: Any, keys_only: bool = False):
        fs, root = fsutil.filesystem(inputs.root)
        paths = [f"{root}/{rel}" for rel in inputs.files]
        super().__init__(paths, filesystem=fs,
                         meta_provider=KnownFiles(dict(zip(paths, inputs.sizes))))
        self.inputs_root = inputs.root
        self.fs_root = root
        self.reader = reader
        self.keys_only = keys_only

    def _open_input_source(self, filesystem: Any, path: str, **open_args: Any) -> Any:
        if self.reader.random_access:
            return filesystem.open_input_file(path)
        return super()._open_input_source(filesystem, path, **open_args)

    def _read_stream(self, f: Any, path: str) -> Iterator[Any]:
        rel = path[len(self.fs_root):].lstrip("/") if path.startswith(self.fs_root) else path
        yield from self.reader.rows(f, rel, fsutil.join(self.inputs_root, rel), self.keys_only)


def read_rows(inputs: Inputs, reader: Any, keys_only: bool = False) -> Any:
    """A lazy ``ray.data.Dataset`` of the reader's rows over ``inputs`` (one read task per
    file, as Ray plans it)."""
    return ray.data.read_datasource(RowsDatasource(inputs, reader, keys_only))
