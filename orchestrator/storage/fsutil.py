"""Local paths and ``s3://`` / ``gs://`` URIs through ``pyarrow.fs``.

pyarrow is imported lazily: parsing a URI needs no filesystem and no network.
"""

from __future__ import annotations

import os
import re
from typing import Any

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://(.*)$")
REMOTE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss")


def split_uri(uri: str) -> tuple[str, str]:
    """``(scheme, path)``: ``("file", "/abs/dir")``, ``("s3", "bucket/prefix")``.

    Raises:
        ValueError: an unsupported scheme, or a remote URI without a bucket.
    """
    m = _SCHEME.match(uri)
    if not m:
        return "file", os.path.abspath(os.path.expanduser(uri))
    scheme, rest = m.group(1).lower(), m.group(2)
    if scheme == "file":
        return "file", os.path.abspath(rest)
    if scheme not in REMOTE_SCHEMES:
        raise ValueError(f"{uri}: unsupported scheme {scheme!r} (use a local path, "
                         f"file://, {', '.join(s + '://' for s in REMOTE_SCHEMES)})")
    rest = rest.strip("/")
    if not rest:
        raise ValueError(f"{uri}: missing bucket name")
    return scheme, rest


def is_remote(uri: str) -> bool:
    """True for a URI with a scheme other than ``file://`` (``s3://``, ``gs://``, ...).

    The one remote check of the orchestrator (config paths, data folders, the cache);
    it never raises: :func:`split_uri` is where unsupported schemes are rejected.
    """
    m = _SCHEME.match(uri)
    return bool(m) and m.group(1).lower() != "file"


def filesystem(uri: str) -> tuple[Any, str]:
    """``(pyarrow.fs.FileSystem, path inside it)`` for a local path or URI."""
    # lazy: pyarrow.fs (with numpy) costs ~0.2 s; `import orchestrator` (--help, ~0.1 s) imports fsutil
    import pyarrow.fs as pafs

    scheme, path = split_uri(uri)
    if scheme == "file":
        return pafs.LocalFileSystem(), path
    fs, inner = pafs.FileSystem.from_uri(uri)  # credentials from the environment
    return fs, inner.rstrip("/")


def join(root: str, *parts: str) -> str:
    """Join path parts with '/', for local paths and URIs alike."""
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts if p)])


def remove_dir(uri: str) -> bool:
    """Delete a folder and everything in it, locally or in a bucket; False if it was absent."""
    # lazy: pyarrow.fs (with numpy) costs ~0.2 s; `import orchestrator` (--help, ~0.1 s) imports fsutil
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return False
    fs.delete_dir(path)
    return True
