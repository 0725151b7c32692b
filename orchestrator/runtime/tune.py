"""A single-worker trial inside its Tune function trainable: no TorchTrainer per trial.

A trial with ``resources.num_workers == 1`` has nothing to gain from Ray Train V2's
per-run machinery (a ``TrainController``, placement-group cleaner, preemption watcher,
dataset manager and a worker process: ~0.7 GB RSS and seconds of start and teardown
per trial on 2 CPUs, issue #13). :class:`TuneRuntime` gives the one DiT loop
(``orchestrator.training.loop.train_steps``) the same five members as
``runtime.train.TrainRuntime``, through Tune's own ``report`` / ``get_checkpoint``:

* within a sweep, Tune's ``FailureConfig(max_failures)`` restarts a failed trial and
  ``ray.tune.get_checkpoint()`` hands it its last checkpoint;
* across sweeps (a killed driver, rerun: a new Tune experiment), the checkpoint is
  also kept under the trial's fixed run folder ``<storage>/<run_name>/checkpoint_<step>``
  (the layout Ray Train uses for multi-worker trials), which a restarted trial reads
  when Tune has none for it.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Callable

from orchestrator.runtime import workarounds

KEEP = 2   # checkpoints kept in the run folder (as Ray Train's CheckpointConfig(num_to_keep=2))
_PREFIX = "checkpoint_"
_COMPLETE = ".complete"   # written last into a checkpoint folder: object stores have no rename


def _step_of(name: str) -> int:
    base = name.rstrip("/").rsplit("/", 1)[-1]
    rest = base[len(_PREFIX):] if base.startswith(_PREFIX) else ""
    return int(rest) if rest.isdigit() else -1


def _fs(uri: str) -> tuple[Any, str]:
    """``(pyarrow filesystem, path)`` of a local folder or an ``s3://``/``gs://`` URI."""
    import pyarrow.fs as pafs

    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path.rstrip("/")


def run_checkpoints(run_dir: str) -> list[str]:
    """Paths (inside the run folder's filesystem) of its complete checkpoints, oldest first."""
    import pyarrow.fs as pafs

    fs, base = _fs(run_dir)
    infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    found = [i.path for i in infos if i.type == pafs.FileType.Directory and _step_of(i.path) >= 0]
    done = [p for p in found if fs.get_file_info(f"{p}/{_COMPLETE}").type == pafs.FileType.File]
    return sorted(done, key=_step_of)


class TuneRuntime:
    """``orchestrator.training.loop.TrialRuntime`` of a single-worker Tune trial (rank 0 of 1).

    Args:
        run_dir: the trial's fixed run folder (local path or URI) for checkpoints that outlive
            the Tune experiment (driver killed, sweep rerun).
        device: ``"cuda"`` when Ray gave this trainable a GPU, else ``"cpu"``.
    """

    def __init__(self, run_dir: str, device: str | None = None) -> None:
        import ray
        import torch

        self.rank, self.world = 0, 1
        if device is None:
            device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.run_dir = run_dir
        # Recorded in the result; asked only inside a Ray worker, since asking from a plain
        # process would start (or join a stale) Ray.
        self.node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None

    def prepare_model(self, model: Any) -> Any:
        return model.to(self.device)

    def save_checkpoint(self, metrics: dict[str, float], files: dict[str, dict]) -> None:
        """Write ``files`` to ``<run_dir>/checkpoint_<step>`` (complete once marked) and report it to Tune."""
        from ray import tune

        from orchestrator.training.loop import write_checkpoint_files

        if not files:
            tune.report(dict(metrics))
            return
        import pyarrow.fs as pafs

        fs, base = _fs(self.run_dir)
        final = f"{base}/{_PREFIX}{int(metrics['step']):09d}"
        with tempfile.TemporaryDirectory() as d:
            write_checkpoint_files(d, files)
            # A checkpoint folder counts only once its marker, copied last, is there: an
            # object store (s3://, gs://) cannot rename a folder, so no temporary name.
            if fs.get_file_info(final).type != pafs.FileType.NotFound:
                fs.delete_dir(final)          # a partial copy left by a killed trial
            fs.create_dir(final)
            pafs.copy_files(d, final, source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=fs)
            with fs.open_output_stream(f"{final}/{_COMPLETE}") as out:
                out.write(b"")
            tune.report(dict(metrics), checkpoint=tune.Checkpoint.from_directory(d))
        for path in run_checkpoints(self.run_dir)[:-KEEP]:
            fs.delete_dir(path)

    def load_checkpoint(self, read: Callable[[str], Any]) -> Any:
        """Tune's checkpoint of this trial (a restart after a failure), else the run folder's."""
        from ray import tune

        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            with ckpt.as_directory() as d:
                return read(d)
        found = run_checkpoints(self.run_dir)
        if not found:
            return None
        import pyarrow.fs as pafs

        fs, _ = _fs(self.run_dir)
        with tempfile.TemporaryDirectory() as d:
            pafs.copy_files(found[-1], d, source_filesystem=fs,
                            destination_filesystem=pafs.LocalFileSystem())
            return read(d)

    def finish(self, metrics: dict[str, float]) -> None:
        from ray import tune

        tune.report({workarounds.FINISHED_KEY: 1, **metrics})
