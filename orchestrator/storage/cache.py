"""Content-addressed artifact cache on local disk or ``s3://`` / ``gs://`` (pyarrow.fs).

A key names everything an artifact was built from::

    cache = ArtifactCache(cfg.storage.cache_dir)
    key = cache.key("embed", 1, fingerprint=src.fingerprint, embedder="clip")
    if not cache.has(key, "arrays"):
        cache.save_arrays(key, features=feats)
    feats = cache.load_arrays(key)["features"]

``key(stage, version, **parts)`` is ``"<stage>/<sha256 of the canonical JSON of
version and parts>"``; bump ``version`` when a stage's code changes its output.
Each artifact is one file ``<root>/<stage>/<digest>.<ext>`` plus a sidecar
``<file>.sha256`` holding its checksum and size, written after the data:

- local: data and sidecar are written to temporary names and renamed into place,
  so a crash mid-write leaves no visible artifact (a data file without its sidecar
  counts as missing);
- s3 / gs: an object appears only once its upload completes, so data and sidecar
  are written directly, sidecar last.

A load verifies the checksum; a truncated or corrupt artifact is logged, deleted
and reported as missing (:class:`CacheMiss`), so the stage rebuilds it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import uuid
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import torch

from orchestrator.storage import fsutil

log = logging.getLogger(__name__)

KINDS = {"arrays": "npz", "json": "json", "bytes": "bin", "torch": "pt", "parquet": "parquet"}


class CacheMiss(KeyError):
    """The artifact is absent, incomplete or failed its checksum."""


def _canonical(x: Any) -> Any:
    """JSON-able form of key parts: dataclasses, tuples, numpy scalars, sorted dicts."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _canonical(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {str(k): _canonical(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
    if isinstance(x, (list, tuple)):
        return [_canonical(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    raise TypeError(f"cache key part of type {type(x).__name__} is not JSON-able: {x!r}")


class ArtifactCache:
    """Artifacts under ``root`` (a local path, ``file://``, ``s3://`` or ``gs://`` URI)."""

    def __init__(self, root: str):
        self.root = root
        fsutil.split_uri(root)  # raises ValueError for unknown schemes
        self.remote = fsutil.is_remote(root)
        self._fs: Any = None
        self._base = ""

    @property
    def fs(self) -> Any:
        """The pyarrow filesystem, created on first use (no network until then)."""
        if self._fs is None:
            self._fs, self._base = fsutil.filesystem(self.root)
        return self._fs

    @staticmethod
    def key(stage: str, version: int | str, **parts: Any) -> str:
        """``"<stage>/<sha256 hex>"`` of the version and parts (order-independent)."""
        if not stage or "/" in stage:
            raise ValueError(f"stage must be a plain name, got {stage!r}")
        blob = json.dumps({"version": _canonical(version), "parts": _canonical(parts)},
                          sort_keys=True, separators=(",", ":"))
        return f"{stage}/{hashlib.sha256(blob.encode()).hexdigest()}"

    def path(self, key: str, kind: str) -> str:
        """The artifact's path inside the filesystem (``fs``)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        _ = self.fs
        return fsutil.join(self._base, f"{key}.{KINDS[kind]}")

    def uri(self, key: str, kind: str) -> str:
        """The artifact's location for humans and logs."""
        return fsutil.join(self.root, f"{key}.{KINDS[kind]}")

    # -- raw bytes with checksum ------------------------------------------------------
    def _write(self, path: str, data: bytes) -> None:
        fs = self.fs
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        if self.remote:
            with fs.open_output_stream(path) as f:
                f.write(data)
            return
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            with fs.open_output_stream(tmp) as f:
                f.write(data)
            fs.move(tmp, path)  # rename(2): atomic on one local filesystem
        except BaseException:
            self._delete(tmp)
            raise

    def _read(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as f:
            return f.read()

    def _delete(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except (FileNotFoundError, OSError):
            pass

    def put(self, key: str, kind: str, data: bytes) -> str:
        """Store raw bytes (data first, then its checksum sidecar); returns the URI."""
        path = self.path(key, kind)
        digest = hashlib.sha256(data).hexdigest()
        self._delete(path + ".sha256")  # an old sidecar must never vouch for new data
        self._write(path, data)
        self._write(path + ".sha256", f"{digest} {len(data)}\n".encode())
        return self.uri(key, kind)

    def get(self, key: str, kind: str) -> bytes:
        """Raw bytes after checking size and sha256; CacheMiss if absent or corrupt."""
        path = self.path(key, kind)
        try:
            digest, size = self._read(path + ".sha256").decode().split()
            data = self._read(path)
        except (FileNotFoundError, ValueError, OSError):
            raise CacheMiss(self.uri(key, kind)) from None
        if len(data) != int(size) or hashlib.sha256(data).hexdigest() != digest:
            log.warning("cache artifact %s is corrupt (%d of %s bytes, checksum mismatch): "
                        "deleting it, it will be rebuilt", self.uri(key, kind), len(data), size)
            self.invalidate(key, kind)
            raise CacheMiss(self.uri(key, kind))
        return data

    def has(self, key: str, kind: str) -> bool:
        """Data and sidecar present with matching size (the checksum is checked on load)."""
        path = self.path(key, kind)
        try:
            _digest, size = self._read(path + ".sha256").decode().split()
        except (FileNotFoundError, ValueError, OSError):
            return False
        info = self.fs.get_file_info(path)
        if info.type != pafs.FileType.File or info.size != int(size):
            log.warning("cache artifact %s is incomplete: treating it as missing",
                        self.uri(key, kind))
            return False
        return True

    def invalidate(self, key: str, kind: str) -> None:
        """Remove an artifact (sidecar first, so a half-removed one is never valid)."""
        path = self.path(key, kind)
        self._delete(path + ".sha256")
        self._delete(path)

    # -- typed helpers ----------------------------------------------------------------
    def save_arrays(self, key: str, **arrays: np.ndarray) -> str:
        """numpy arrays as one uncompressed ``.npz`` (no pickles)."""
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        return self.put(key, "arrays", buf.getvalue())

    def load_arrays(self, key: str) -> dict[str, np.ndarray]:
        with np.load(io.BytesIO(self.get(key, "arrays")), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def save_json(self, key: str, obj: Any) -> str:
        return self.put(key, "json", json.dumps(obj, indent=1, sort_keys=True).encode())

    def load_json(self, key: str) -> Any:
        return json.loads(self.get(key, "json"))

    def save_bytes(self, key: str, data: bytes) -> str:
        return self.put(key, "bytes", data)

    def load_bytes(self, key: str) -> bytes:
        return self.get(key, "bytes")

    def save_state_dict(self, key: str, state: dict[str, Any]) -> str:
        """A torch state dict (tensors and plain values) via ``torch.save``."""
        buf = io.BytesIO()
        torch.save(state, buf)
        return self.put(key, "torch", buf.getvalue())

    def load_state_dict(self, key: str, map_location: str = "cpu") -> dict[str, Any]:
        """``torch.load(weights_only=True)``: never unpickles arbitrary objects."""
        return torch.load(io.BytesIO(self.get(key, "torch")), map_location=map_location,
                          weights_only=True)
