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

from typing import Any, Callable

import ray
import torch
from ray import tune

from orchestrator.runtime import workarounds
from orchestrator.training.run_folder import FolderRuntime, load_from_folder, run_checkpoints

__all__ = ["TuneRuntime", "run_checkpoints"]


class TuneRuntime(FolderRuntime):
    """``orchestrator.training.loop.TrialRuntime`` of a single-worker Tune trial (rank 0 of 1):
    :class:`~orchestrator.training.run_folder.FolderRuntime`'s run-folder checkpoints, each
    also reported to Tune (``tune.report``), and Tune's own checkpoint first on a restart.

    Args:
        run_dir: the trial's fixed run folder (local path or URI) for checkpoints that outlive
            the Tune experiment (driver killed, sweep rerun).
        device: ``"cuda"`` when Ray gave this trainable a GPU, else ``"cpu"``.
    """

    def __init__(self, run_dir: str, device: str | None = None) -> None:
        if device is None:
            device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        super().__init__(run_dir, device)
        # Recorded in the result; asked only inside a Ray worker, since asking from a plain
        # process would start (or join a stale) Ray.
        self.node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        """``tune.report`` (with the checkpoint folder, while it still exists)."""
        ckpt = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(dict(metrics), checkpoint=ckpt)

    def load_checkpoint(self, read: Callable[[str], Any]) -> Any:
        """Tune's checkpoint of this trial (a restart after a failure), else the run folder's."""
        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            with ckpt.as_directory() as d:
                return read(d)
        return load_from_folder(self.run_dir, read)

    def finish(self, metrics: dict[str, float]) -> None:
        self.report({workarounds.FINISHED_KEY: 1, **metrics}, None)
