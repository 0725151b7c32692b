"""Listings of local and remote data, through ``pyarrow.fs`` (``orchestrator.storage.fsutil``).

- :func:`list_inputs`: the input files of a streaming source (``parquet``, ``webdataset``):
  ``path`` is a file, a folder (listed recursively, files with the source's suffixes, names
  starting with ``.`` or ``_`` left out: ``_SUCCESS``, ``_metadata``, ``.DS_Store``) or a
  glob (``*``, ``?``, ``[..]`` in the path; ``*`` also matches ``/``). Files are listed, not
  rows: a few requests per thousand shards.
- :func:`bounded_count`: the objects under a remote folder, counted from at most
  ``MAX_COUNTED + 1`` listed keys (a few requests, whatever the folder's size), so
  ``--dry-run`` on an ``s3://`` prefix says how many images it holds, or that it holds more
  than ``MAX_COUNTED`` and is counted at run time.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

import pyarrow.fs as pafs

from orchestrator.errors import SourceError
from orchestrator.storage import fsutil

MAX_COUNTED = 10_000            # objects listed by the dry-run's bounded count
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Inputs:
    """A streaming source's files: ``root`` (local path or URI), ``files`` relative to it
    (sorted), ``sizes`` in bytes (same order)."""

    root: str
    files: tuple[str, ...]
    sizes: tuple[int, ...]

    def uri(self, rel: str) -> str:
        """The full path or URI of the file ``rel``."""
        return fsutil.join(self.root, rel)


def _hidden(rel: str) -> bool:
    return any(part.startswith((".", "_")) for part in rel.split("/"))


def _root_uri(path: str) -> str:
    """A local path made absolute, a URI kept (without a trailing '/')."""
    scheme, inner = fsutil.split_uri(path)
    return inner if scheme == "file" else path.rstrip("/")


def list_inputs(path: str, suffixes: tuple[str, ...]) -> Inputs:
    """The files of ``path`` (a file, a folder or a glob; local or remote), sorted.

    Args:
        path: local path, ``file://``, ``s3://`` or ``gs://`` URI, optionally with a glob.
        suffixes: lower-case endings kept when listing a folder, e.g. ``(".parquet",)``.
    Raises:
        SourceError: nothing there, no matching file, or the listing failed (one line).
    """
    parts = path.rstrip("/").split("/")
    glob_at = next((i for i, p in enumerate(parts) if _GLOB.search(p)), None)
    try:
        if glob_at is not None:
            base = "/".join(parts[:glob_at])
            fs, inner = fsutil.filesystem(base)
            pattern = "/".join([inner, *parts[glob_at:]])
            infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True,
                                                       allow_not_found=True))
            found = [(i.path[len(inner):].lstrip("/"), i.size or 0) for i in infos
                     if i.type == pafs.FileType.File and fnmatch.fnmatchcase(i.path, pattern)]
            root = _root_uri(base)
        else:
            fs, inner = fsutil.filesystem(path)
            info = fs.get_file_info(inner)
            if info.type == pafs.FileType.File:
                root = _root_uri(path).rsplit("/", 1)[0]
                found = [(info.base_name, info.size or 0)]
            elif info.type == pafs.FileType.Directory:
                infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
                found = [(i.path[len(inner):].lstrip("/"), i.size or 0) for i in infos
                         if i.type == pafs.FileType.File]
                found = [(r, s) for r, s in found
                         if r.lower().endswith(suffixes) and not _hidden(r)]
                root = _root_uri(path)
            else:
                raise SourceError(f"{path}: not found")
    except (OSError, ValueError) as e:
        raise SourceError(f"{path}: cannot list: {e}") from None
    if not found:
        raise SourceError(f"{path}: no {' or '.join(suffixes)} files")
    found.sort()
    return Inputs(root, tuple(r for r, _ in found), tuple(int(s) for _, s in found))


def bounded_count(uri: str, limit: int | None = None) -> tuple[int | None, str]:
    """Files under the remote folder ``uri`` (hidden ones left out), from a bounded listing
    of at most ``limit + 1`` keys (default ``MAX_COUNTED``).

    Returns:
        ``(n, "")`` when the folder holds ``n <= limit`` files; ``(None, why)`` when it
        holds more, or cannot be counted cheaply (not ``s3://``, boto3 missing, listing
        failed): ``why`` says so in words, for the dry-run. Never raises.
    """
    scheme, inner = fsutil.split_uri(uri)
    if scheme != "s3":
        return None, f"not listed at dry-run ({scheme}://): counted at run time"
    try:
        # lazy: boto3 is optional (not in install_requires), ~0.2 s; only a dry-run's s3:// count uses it
        import boto3
        # lazy: botocore comes with boto3, optional as well (above)
        from botocore.config import Config
    except ImportError:
        return None, "not listed at dry-run (boto3 is not installed): counted at run time"
    limit = MAX_COUNTED if limit is None else limit
    bucket, _, prefix = inner.partition("/")
    prefix = f"{prefix.rstrip('/')}/" if prefix else ""
    try:
        client = boto3.client("s3", config=Config(connect_timeout=5, read_timeout=20,
                                                  retries={"max_attempts": 2}))
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix,
            PaginationConfig={"MaxItems": limit + 1, "PageSize": min(1000, limit + 1)})
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    except Exception as e:   # credentials, network, missing bucket: the run says it properly
        return None, f"not listed at dry-run ({type(e).__name__}: {e}): counted at run time"
    if len(keys) > limit:
        return None, f"more than {limit:,} objects under {uri}: counted at run time"
    return sum(1 for k in keys if not k.endswith("/")
               and not any(p.startswith(".") for p in k[len(prefix):].split("/"))), ""
