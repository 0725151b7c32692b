"""Image-folder sources: any folder, CelebA-HQ (unconditional), ImageNet (ILSVRC).

A folder is listed recursively through ``pyarrow.fs`` (local, ``s3://``, ``gs://``),
hidden files excluded, sorted; an image's id is its position in that listing, its
``key`` its path relative to the dataset's ``path`` (``cat/001.png``; ``train/n01/x.JPEG``
for a split), its ``uri`` the full path or URI. Every other file is tried: corrupt,
truncated, zero-byte and non-image files are never fatal.

- ``load_arrays`` decodes the selected files with PIL on a thread pool (no Ray):
  right for folders of up to some ten thousand images. Bad files are left out and
  listed (``SourceArrays.skipped``).
- The Ray path (``file_rows``, streamed by ``orchestrator.runtime.ray_sources``) lists
  the files on the driver and decodes them in Ray Data tasks, for big folders. A bad file stays in the stream as a row with ``error`` set (the
  reason) and a zero image; the consuming stage lists and counts them.
  ``SourceData.count`` is the number of selected files (good + bad).

A folder with no readable image is a user mistake, reported in one line before any
work: ``check`` (run by the config checks, so also at ``--dry-run``) probes a local
folder, or a remote one that a bounded listing (``listing.bounded_count``, at most
``MAX_COUNTED`` objects) finds small; ``file_rows`` probes any folder, by decoding up
to ``PROBE_FILES`` evenly spaced selected files; when none decodes,
:class:`SourceError` names the folder and the count of files skipped.
"""

from __future__ import annotations

import csv
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from orchestrator.data import DatasetConfig
from orchestrator.data.base import (SkippedFile, Source, SourceArrays, check_split_sizes,
                                    sample_positions)
from orchestrator.data.images import decode_image
from orchestrator.data.listing import bounded_count
from orchestrator.errors import ConfigError, SourceError
from orchestrator.storage import fsutil

log = logging.getLogger(__name__)

PROBE_FILES = 64   # files decoded by the readability probe (seconds, even from a bucket)


@dataclass(frozen=True)
class Listing:
    uri: str                  # dataset root (local path or URI)
    files: list[str]          # paths relative to uri, sorted
    sizes: np.ndarray         # (F,) int64 bytes
    labels: np.ndarray        # (F,) int64, -1 = unlabelled
    num_classes: int


def _list_files(uri: str) -> tuple[list[str], np.ndarray]:
    fs, root = fsutil.filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    rel = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        r = info.path[len(root):].lstrip("/")
        if any(part.startswith(".") for part in r.split("/")):
            continue  # .DS_Store, ._AppleDouble, checkpoints of editors
        rel.append((r, info.size or 0))
    rel.sort()
    return [r for r, _ in rel], np.array([s for _, s in rel], dtype=np.int64)


def _read(uri: str, rel: str) -> bytes:
    fs, root = fsutil.filesystem(uri)
    with fs.open_input_stream(fsutil.join(root, rel)) as f:
        return f.read()


def _decode_one(uri: str, rel: str, size: int) -> tuple[np.ndarray | None, str]:
    try:
        return decode_image(_read(uri, rel), size), ""
    except (ValueError, OSError) as e:
        return None, str(e)


def _decode_many(uri: str, rels: list[str], size: int) -> list[tuple[np.ndarray | None, str]]:
    workers = min(8, (os.cpu_count() or 1) * 2)  # PIL decoding releases the GIL
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda rel: _decode_one(uri, rel, size), rels))


def none_readable(folder: str, skipped: list[tuple[str, str]], total: int,
                  where: str) -> SourceError:
    """The one-line error for a selection in which not one file decodes."""
    checked = (f"all {len(skipped)} files" if len(skipped) == total
               else f"{len(skipped)} of {total} files checked, all")
    what = f"{checked} skipped as unreadable" if skipped else "no files"
    eg = f" (e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
    return SourceError(f"{where}: no readable image in {folder}: {what}{eg}")


def _probe(lst: Listing, keep: np.ndarray, where: str) -> None:
    rels = [lst.files[keep[i]] for i in sample_positions(len(keep), PROBE_FILES)]
    results = _decode_many(lst.uri, rels, 8)
    if not any(img is not None for img, _ in results):
        skipped = [(rel, reason) for rel, (_, reason) in zip(rels, results)]
        raise none_readable(lst.uri, skipped, len(keep), where)


def decode_file_batch(batch: dict[str, np.ndarray], uri: str, size: int) -> dict[str, np.ndarray]:
    """map_batches fn of :meth:`FolderSource.file_rows`: {id, path, key, uri, label} -> {id, key, uri, image (B, R,
    R, 3) uint8, label, error}; a bad file keeps its row, with a zero image and the reason."""
    n = len(batch["path"])
    images = np.zeros((n, size, size, 3), np.uint8)
    errors = np.full(n, "", dtype=object)
    for j, rel in enumerate(batch["path"]):
        img, reason = _decode_one(uri, str(rel), size)
        if img is None:
            errors[j] = reason
        else:
            images[j] = img
    return {"id": batch["id"].astype(np.int64), "key": batch["key"], "uri": batch["uri"],
            "image": images, "label": batch["label"].astype(np.int64), "error": errors}


class FolderSource(Source):
    """Shared listing / decoding; subclasses decide the root and the labels."""

    def root(self, ds: DatasetConfig) -> str:
        return fsutil.join(ds.path, ds.split) if ds.split else ds.path

    def names(self, ds: DatasetConfig, lst: Listing,
              keep: np.ndarray) -> tuple[list[str], list[str]]:
        """(keys, uris) of the listed files ``keep``: the path relative to ``ds.path`` (the
        split folder first, if any) and the full path or URI."""
        rels = [lst.files[i] for i in keep]
        keys = [f"{ds.split}/{r}" for r in rels] if ds.split else rels
        return keys, [fsutil.join(lst.uri, r) for r in rels]

    def _remote_small(self, ds: DatasetConfig) -> bool:
        """Whether the remote folders of ``ds`` (training and reference) are small enough
        to list and probe at check time (a bounded listing of each)."""
        roots = {self.root(ds), self.root(self.role_config(ds, "reference"))}
        return all(bounded_count(r)[0] is not None for r in roots)

    def listing(self, ds: DatasetConfig) -> Listing:
        uri = self.root(ds)
        files, sizes = _list_files(uri)
        if self.labelled(ds):
            classes = sorted({f.split("/")[0] for f in files if "/" in f})
            index = {c: i for i, c in enumerate(classes)}
            labels = np.array([index.get(f.split("/")[0], -1) if "/" in f else -1
                               for f in files], dtype=np.int64)
            return Listing(uri, files, sizes, labels, len(classes))
        return Listing(uri, files, sizes, np.full(len(files), -1, np.int64), 0)

    def check(self, ds: DatasetConfig, key: str) -> int | None:
        if not ds.path:
            raise ConfigError(f"{key}.path: required for source {self.name}")
        super().check(ds, key)
        try:
            remote = fsutil.is_remote(ds.path)
        except ValueError as e:
            raise ConfigError(f"{key}.path: {e}") from None
        if not remote and not os.path.isdir(self.root(ds)):
            raise ConfigError(f"{key}.path: directory not found: {self.root(ds)}")
        ref_cfg = self.role_config(ds, "reference")
        if remote:
            if not self._remote_small(ds):
                return ds.limit     # count_note says why: counted at run time
            try:
                return self._check_listed(ds, ref_cfg, key)
            except OSError as e:
                raise ConfigError(f"{key}.path: cannot list {ds.path}: {e}") from None
        if not os.path.isdir(self.root(ref_cfg)):
            raise ConfigError(f"{key}.path: directory not found: {self.root(ref_cfg)} "
                              f"(the held-out reference split of {self.name})")
        return self._check_listed(ds, ref_cfg, key)

    def _check_listed(self, ds: DatasetConfig, ref_cfg: DatasetConfig, key: str) -> int | None:
        """Sizes and readability from the listing: local folders and small remote ones."""
        # list the reference's folder, so an empty reference (or, for a held-out share,
        # an empty training set) fails here, before any Ray work
        ref_labels = self.listing(ref_cfg).labels
        n_ref = len(self.positions(ref_labels, ds, "reference"))
        if not self.holds_out:   # the training split is not listed (ImageNet: 1.28M files)
            check_split_sizes(key, str(ref_cfg.split), ds, n_ref, 1, n_ref, False)
            self.probe(ds, f"{key}.path")
            return ds.limit
        n_train = len(self.positions(ref_labels, ds, "train"))
        check_split_sizes(key, str(ref_cfg.split), ds, len(ref_labels), n_train, n_ref, True)
        self.probe(ds, f"{key}.path")   # sizes first: a held-out share can empty the training set
        return n_train

    def count_note(self, ds: DatasetConfig) -> str:
        if ds.path and fsutil.is_remote(ds.path):
            return bounded_count(self.root(ds))[1] or "counted at run time"
        return super().count_note(ds)

    def reference_count(self, ds: DatasetConfig, cap: int | None = None) -> int | None:
        ref_cfg = self.role_config(ds, "reference")
        if not ds.path:
            return None
        if fsutil.is_remote(ds.path):
            if bounded_count(self.root(ref_cfg))[0] is None:
                return None
        elif not os.path.isdir(self.root(ref_cfg)):
            return None
        return len(self.positions(self.listing(ref_cfg).labels, ds, "reference", cap))

    def probe(self, ds: DatasetConfig, where: str) -> None:
        """Decode up to ``PROBE_FILES`` evenly spaced selected training files.

        Raises:
            SourceError: not one of them decodes (names the folder and the count).
        """
        lst = self.listing(self.role_config(ds, "train"))
        _probe(lst, self.positions(lst.labels, ds, "train"), where)

    def _selected(self, ds: DatasetConfig, role: str = "train",
                  cap: int | None = None) -> tuple[Listing, np.ndarray, str, list[bytes]]:
        lst = self.listing(self.role_config(ds, role))
        keep = self.positions(lst.labels, ds, role, cap)
        blobs = [_read(lst.uri, lst.files[keep[i]]) for i in sample_positions(len(keep))]
        extra = "\n".join(f"{lst.files[i]}\t{lst.sizes[i]}" for i in keep)
        return lst, keep, extra, blobs

    def arrays(self, ds: DatasetConfig, role: str = "train", cap: int | None = None) -> SourceArrays:
        lst, keep, extra, blobs = self._selected(ds, role, cap)
        fp = self.fingerprint_of(ds, role, cap, keep, lst.labels[keep], blobs, extra)
        results = _decode_many(lst.uri, [lst.files[i] for i in keep], ds.resolution)
        ok = np.array([img is not None for img, _ in results], dtype=bool)
        keys, uris = (np.array(x, dtype=object).reshape(-1)
                      for x in self.names(self.role_config(ds, role), lst, keep))
        skipped = tuple(SkippedFile(k, reason)
                        for k, (img, reason) in zip(keys, results) if img is None)
        for s in skipped:
            log.warning("skipping %s: %s", s.path, s.reason)
        if not ok.any():
            raise none_readable(lst.uri, [(s.path, s.reason) for s in skipped], len(keep),
                                f"dataset {ds.name}")
        images = [img for img, _ in results if img is not None]
        stacked = (np.stack(images) if images
                   else np.zeros((0, ds.resolution, ds.resolution, 3), np.uint8))
        return SourceArrays(keep[ok], stacked, lst.labels[keep][ok], fp, lst.num_classes,
                            skipped, keys=keys[ok], uris=uris[ok])

    def file_rows(self, ds: DatasetConfig, role: str = "train",
                  cap: int | None = None) -> tuple[list[Any], str, str, int, int]:
        """What the Ray executor streams (``runtime.ray_sources``): the selected files as
        ``pyarrow`` tables of rows ``{id, path, key, uri, label}`` (256 files a block), which
        :func:`decode_file_batch` decodes where they are read; with the folder's uri, the
        fingerprint, the file count and the number of classes.

        Raises:
            SourceError: none of up to ``PROBE_FILES`` sampled files decodes (before Ray
                Data would drop every file silently).
        """
        lst, keep, extra, blobs = self._selected(ds, role, cap)
        _probe(lst, keep, f"dataset {ds.name}")
        fp = self.fingerprint_of(ds, role, cap, keep, lst.labels[keep], blobs, extra)
        keys, uris = self.names(self.role_config(ds, role), lst, keep)
        step = 256  # files per block: enough blocks for parallel decoding
        tables = [pa.table({"id": pa.array(keep[s:s + step], pa.int64()),
                            "path": pa.array([lst.files[i] for i in keep[s:s + step]], pa.string()),
                            "key": pa.array(keys[s:s + step], pa.string()),
                            "uri": pa.array(uris[s:s + step], pa.string()),
                            "label": pa.array(lst.labels[keep[s:s + step]], pa.int64())})
                  for s in range(0, max(len(keep), 1), step)]
        return tables, lst.uri, fp, len(keep), lst.num_classes


class ImageFolder(FolderSource):
    """Any folder of images; ``class_subfolders: true`` labels by first subfolder."""

    name = "image_folder"

    def labelled(self, ds: DatasetConfig) -> bool:
        return ds.class_subfolders


class CelebAHQ(FolderSource):
    """CelebA-HQ (e.g. the 30,000 images at 1024 or 256 px), unconditional."""

    name = "celeba_hq"

    def labelled(self, ds: DatasetConfig) -> bool:
        return False


class ImageNet(FolderSource):
    """ILSVRC-2012: ``<path>/train/<synset>/*.JPEG``; ``val`` either in synset
    subfolders or flat with ``<path>/LOC_val_solution.csv``. Labels are the index of
    the synset among the sorted ``train`` synsets (torchvision's ImageFolder order)."""

    name = "imagenet"
    splits = ("train", "val")
    reference_split = "val"

    def synsets(self, ds: DatasetConfig) -> list[str]:
        fs, root = fsutil.filesystem(fsutil.join(ds.path, "train"))
        infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    def listing(self, ds: DatasetConfig) -> Listing:
        lst = super().listing(ds)
        synsets = self.synsets(ds) or sorted({f.split("/")[0] for f in lst.files if "/" in f})
        index = {s: i for i, s in enumerate(synsets)}
        solution = fsutil.join(ds.path, "LOC_val_solution.csv")
        by_image: dict[str, str] = {}
        if ds.split == "val" and lst.files and not any("/" in f for f in lst.files):
            text = _read(ds.path, "LOC_val_solution.csv").decode()
            rows = list(csv.reader(text.splitlines()))[1:]  # ImageId,PredictionString
            by_image = {row[0]: row[1].split()[0] for row in rows if len(row) > 1 and row[1]}
            log.info("imagenet val labels from %s", solution)
        labels = np.array([
            index.get(f.split("/")[0], -1) if "/" in f
            else index.get(by_image.get(os.path.splitext(f)[0], ""), -1)
            for f in lst.files], dtype=np.int64)
        return Listing(lst.uri, lst.files, lst.sizes, labels, len(synsets))
