"""A trial's checkpoints in its fixed run folder, and the single-process runtime built on it.

A run folder (local path, ``s3://`` or ``gs://``) holds ``checkpoint_<step>`` folders, each
complete once its ``.complete`` marker, copied last, is there (an object store cannot rename
a folder, so there is no temporary name). The newest :data:`KEEP` are kept.

:class:`FolderRuntime` is the ``TrialRuntime`` (``training/loop.py``) of a single-worker
trial that checkpoints into its run folder and resumes from it, with no Ray: the local
executor runs trials with it, and ``runtime.tune.TuneRuntime`` adds Tune's reports and
checkpoints on top.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Callable

import pyarrow.fs as pafs
import torch

from orchestrator.training.loop import write_checkpoint_files

KEEP = 2   # checkpoints kept in the run folder (as Ray Train's CheckpointConfig(num_to_keep=2))
PREFIX = "checkpoint_"
COMPLETE = ".complete"   # written last into a checkpoint folder


def step_of(name: str) -> int:
    """The step of a ``checkpoint_<step>`` folder name (-1 for any other name)."""
    base = name.rstrip("/").rsplit("/", 1)[-1]
    rest = base[len(PREFIX):] if base.startswith(PREFIX) else ""
    return int(rest) if rest.isdigit() else -1


def folder_fs(uri: str) -> tuple[Any, str]:
    """``(pyarrow filesystem, path)`` of a local folder or an ``s3://``/``gs://`` URI."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path.rstrip("/")


def run_checkpoints(run_dir: str) -> list[str]:
    """Paths (inside the run folder's filesystem) of its complete checkpoints, oldest first."""
    fs, base = folder_fs(run_dir)
    infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    found = [i.path for i in infos if i.type == pafs.FileType.Directory and step_of(i.path) >= 0]
    done = [p for p in found if fs.get_file_info(f"{p}/{COMPLETE}").type == pafs.FileType.File]
    return sorted(done, key=step_of)


def save_to_folder(run_dir: str, step: int, local_dir: str) -> None:
    """Copy a checkpoint written in ``local_dir`` to ``<run_dir>/checkpoint_<step>``, mark it
    complete, and keep the newest :data:`KEEP`."""
    fs, base = folder_fs(run_dir)
    final = f"{base}/{PREFIX}{int(step):09d}"
    if fs.get_file_info(final).type != pafs.FileType.NotFound:
        fs.delete_dir(final)          # a partial copy left by a killed trial
    fs.create_dir(final)
    pafs.copy_files(local_dir, final, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)
    with fs.open_output_stream(f"{final}/{COMPLETE}") as out:
        out.write(b"")
    for path in run_checkpoints(run_dir)[:-KEEP]:
        fs.delete_dir(path)


def load_from_folder(run_dir: str, read: Callable[[str], Any]) -> Any:
    """``read(local copy)`` of the run folder's newest complete checkpoint, or None."""
    found = run_checkpoints(run_dir)
    if not found:
        return None
    fs, _ = folder_fs(run_dir)
    with tempfile.TemporaryDirectory() as d:
        pafs.copy_files(found[-1], d, source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())
        return read(d)


class FolderRuntime:
    """``TrialRuntime`` of a single-worker trial in this process (rank 0 of 1), checkpoints
    in its run folder: a rerun resumes from the newest complete one.

    Args:
        run_dir: the trial's fixed run folder (local path or URI).
        device: torch device (default: CUDA when available, else CPU).
    """

    node_id: str | None = None   # recorded in the result: no Ray node here

    def __init__(self, run_dir: str, device: str | None = None) -> None:
        self.rank, self.world = 0, 1
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.run_dir = run_dir
        self.reported: list[dict[str, float]] = []   # the metrics of every report, in order
        # called with every report's metrics (the local executor's live MLflow logging)
        self.on_report: Callable[[dict[str, float]], None] | None = None

    def prepare_model(self, model: Any) -> Any:
        return model.to(self.device)

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        """Called with every report (and the local checkpoint folder, if any)."""
        self.reported.append(dict(metrics))
        if self.on_report is not None:
            self.on_report(dict(metrics))

    def save_checkpoint(self, metrics: dict[str, float], files: dict[str, dict]) -> None:
        """Write ``files`` to ``<run_dir>/checkpoint_<step>``, then :meth:`report`."""
        if not files:
            self.report(metrics, None)
            return
        with tempfile.TemporaryDirectory() as d:
            write_checkpoint_files(d, files)
            save_to_folder(self.run_dir, int(metrics["step"]), d)
            self.report(metrics, d)

    def load_checkpoint(self, read: Callable[[str], Any]) -> Any:
        return load_from_folder(self.run_dir, read)

    def finish(self, metrics: dict[str, float]) -> None:
        self.report(dict(metrics), None)
