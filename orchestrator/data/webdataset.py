"""The ``webdataset`` source: WebDataset ``.tar`` shards, local or ``s3://`` / ``gs://``.

Params (``data.datasets[i]``):

- ``path``: a shard, a folder or prefix of shards (recursive; ``_``/``.`` names left
  out) or a glob (``s3://bucket/shards/train-*.tar``).
- ``label_column`` (optional, default ``cls``): the member extension holding the
  integer label (``000123.cls`` containing ``7``); a sample without it is unlabelled (-1).

A sample is the run of consecutive members sharing a ``__key__`` (the member name up
to the first ``.`` of its base name, WebDataset's rule); the sample's ``key`` is that
``__key__`` (keys must be unique across shards), its ``uri`` ``<shard uri>#<__key__>``,
its image the first of its ``jpg``, ``jpeg``, ``png``, ``webp`` members. Shards are
streamed by Ray Data read tasks (``runtime.ray_read``); our reader rather than
``ray.data.read_webdataset`` because that one fails the whole read on a truncated shard
or on a key seen twice. Bad data is a row with ``error`` set, never a failure: a sample
without an image member (``no image member``), an undecodable image, a bad label, a key
repeated within a shard, and a shard that breaks off (the sample being read, or the
shard itself as key, gets the reason). Held-out share, ``limit`` and fingerprint:
``orchestrator.data.stream``.
"""

from __future__ import annotations

import re
import tarfile
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

from orchestrator.data import DatasetConfig
from orchestrator.data.stream import StreamingSource, rows_table, transient

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
BLOCK_SAMPLES = 256        # samples per block
_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")   # WebDataset's __key__ / extension split


def split_member(name: str) -> tuple[str | None, str]:
    """(``__key__``, extension) of a member name: ``a/b/0001.seg.png`` -> ``a/b/0001``,
    ``seg.png``; (None, "") for a name without an extension."""
    m = _KEY.match(name)
    return (m.group(1), m.group(2)) if m else (None, "")


class _Block:
    """Reader rows being collected for one block."""

    def __init__(self) -> None:
        self.cols: dict[str, list] = {"key": [], "uri": [], "data": [], "label": [], "error": []}

    def add(self, key: str, uri: str, data: bytes | None, label: int, error: str) -> None:
        for c, v in zip(self.cols, (key, uri, data, label, error)):
            self.cols[c].append(v)

    def __len__(self) -> int:
        return len(self.cols["key"])

    def table(self) -> Any:
        t = rows_table(*self.cols.values())
        self.__init__()
        return t


@dataclass(frozen=True)
class ShardReader:
    """Reads one tar shard into reader rows (``orchestrator.data.stream``)."""

    label_member: str = "cls"
    retried: tuple[str, ...] = ()     # error messages the read task retries (stream.transient)
    random_access: ClassVar[bool] = False

    def _sample(self, out: _Block, key: str, members: dict[str, bytes | None], uri: str,
                error: str = "") -> None:
        data = next((members[e] for e in IMAGE_EXTS if e in members), None)
        if not error and not any(e in members for e in IMAGE_EXTS):
            error = "no image member (jpg, jpeg, png or webp)"
        label = -1
        raw = members.get(self.label_member)
        if raw is not None:
            try:
                label = int(raw.decode().strip())
            except (UnicodeDecodeError, ValueError):
                error = error or f"bad {self.label_member} member: {raw[:20]!r}"
        out.add(key, f"{uri}#{key}", data, label, error)

    def rows(self, f: Any, rel: str, uri: str, keys_only: bool) -> Iterator[Any]:
        """Blocks of rows ``{key, uri, data, label, error}`` of the shard ``f`` (a stream)."""
        wanted = {*IMAGE_EXTS, self.label_member}
        out, seen = _Block(), set()
        run = key = None        # the current member run's key; the sample's (None: skipped)
        members: dict[str, bytes | None] = {}
        try:
            with tarfile.open(fileobj=f, mode="r|*") as tar:
                for info in tar:
                    k, ext = split_member(info.name) if info.isreg() else (None, "")
                    if k is None:
                        continue
                    if k != run:
                        if key is not None:
                            self._sample(out, key, members, uri)
                        run, key, members = k, k, {}
                        if k in seen:
                            out.add(k, f"{uri}#{k}", None, -1,
                                    "key repeated in the shard (its members are not adjacent)")
                            key = None
                        seen.add(k)
                        if len(out) >= BLOCK_SAMPLES:
                            yield out.table()
                    if key is None:
                        continue
                    ext = ext.lower()
                    read = ext in wanted and not (keys_only and ext != self.label_member)
                    members[ext] = tar.extractfile(info).read() if read else None
            if key is not None:
                self._sample(out, key, members, uri)
                key = None
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            if transient(e, self.retried):
                raise    # Ray's read task retries the shard
            reason = f"unreadable tar shard {rel}: {type(e).__name__}: {e}"
            if key is not None:
                self._sample(out, key, members, uri, error=reason)
            else:
                out.add(rel, uri, None, -1, reason)
        if len(out):
            yield out.table()


class WebDatasetSource(StreamingSource):
    """WebDataset ``.tar`` shards: a shard, folder or glob, local or ``s3://`` / ``gs://``;
    the image is a sample's ``jpg``/``jpeg``/``png``/``webp`` member, the label its ``cls``
    member (``label_column``) (details: the module docstring)."""

    name = "webdataset"
    suffixes = (".tar",)
    what = "shard(s)"

    def labelled(self, ds: DatasetConfig) -> bool:
        return True    # from the label member where a sample has one (-1 elsewhere)

    def reader(self, ds: DatasetConfig) -> ShardReader:
        return ShardReader(ds.label_column or "cls")
