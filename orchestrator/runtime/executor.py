"""The executor: how the stages run their work, on Ray or in this process.

A stage decides *what* runs (which trials are missing, which score jobs, what is cached);
an :class:`Executor` decides *where*. Two implementations share the interface:

- :class:`RayExecutor`: Ray tasks with one worker's resources (score, select, k-means,
  the classifier space), and the sweep's trials as a Ray Tune grid
  (:mod:`orchestrator.runtime.trials`: one function trainable per trial, a ``TorchTrainer``
  per trial when it has several DDP workers). What every run uses today.
- :class:`LocalExecutor`: the same functions called here, one after another; trials run
  on a :class:`~orchestrator.training.run_folder.FolderRuntime` (checkpoints in the same
  run folders, so a rerun resumes as on Ray). No Ray is imported. The encode, embed and
  proxy stages still read their data through Ray Data, so a whole run cannot use it yet
  (ARCHITECTURE.md, "The executor boundary").

A trial job is ``(run name, spec cache key)``: the spec (a
:class:`~orchestrator.training.records.TrialSpec`, cache keys only) is read where the trial
runs, from the cache at ``cache_root``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from orchestrator.progress import say
from orchestrator.runtime.resources import ResourcePlan


@dataclass(frozen=True)
class TrialJobs:
    """The trials a sweep still has to run, and where they keep their state.

    Attributes:
        jobs: ``(run name, spec cache key)`` per trial, in grid order.
        cache_root: the artifact cache the specs (and results) live in.
        storage: the folder of the trials' run folders (``<ray_storage>/trials``).
        experiment: the Tune experiment's storage root and name prefix (``ray_storage``, name).
        max_failures: restarts of a failed trial.
        callbacks: Ray Tune callbacks (the live MLflow logger); the local executor has none.
    """

    jobs: tuple[tuple[str, str], ...]
    cache_root: str
    storage: str
    experiment: tuple[str, str]
    max_failures: int
    callbacks: Sequence[Any] = field(default_factory=tuple)


class Executor(Protocol):
    """Runs the stages' tasks and trials (see the module docstring)."""

    name: str

    def run_tasks(self, fn: Callable[..., Any], calls: list[tuple], name: str) -> list[Any]:
        """``fn(*args)`` for each ``args`` in ``calls``; the results in order."""

    def run_trials(self, trials: TrialJobs) -> dict[str, str]:
        """Run every trial of ``trials``; ``{spec cache key: error}`` of those that raised
        (a trial that finishes writes its result into the cache itself)."""


class RayExecutor:
    """Ray tasks and a Ray Tune grid, sized by a :class:`ResourcePlan`."""

    name = "ray"

    def __init__(self, plan: ResourcePlan) -> None:
        self.plan = plan

    def run_tasks(self, fn: Callable[..., Any], calls: list[tuple], name: str) -> list[Any]:
        from orchestrator.runtime.cluster import run_tasks

        return run_tasks(fn, self.plan, calls, name)

    def run_trials(self, trials: TrialJobs) -> dict[str, str]:
        from orchestrator.runtime.trials import run_tune_grid

        return run_tune_grid(trials, self.plan)


class LocalExecutor:
    """Everything in this process, one call after another (no Ray)."""

    name = "local"

    def __init__(self, device: str | None = None) -> None:
        self.device = device

    def run_tasks(self, fn: Callable[..., Any], calls: list[tuple], name: str) -> list[Any]:
        return [fn(*args) for args in calls]

    def run_trials(self, trials: TrialJobs) -> dict[str, str]:
        from orchestrator.storage.cache import ArtifactCache
        from orchestrator.storage.fsutil import join
        from orchestrator.training.records import TrialSpec
        from orchestrator.training.run_folder import FolderRuntime
        from orchestrator.training.trial import run_trial

        cache, errors = ArtifactCache(trials.cache_root), {}
        for run_name, spec_key in trials.jobs:
            spec = TrialSpec.from_json(cache.load_json(spec_key))
            for attempt in range(trials.max_failures + 1):   # a restart resumes from its folder
                try:
                    run_trial(spec, FolderRuntime(join(trials.storage, run_name), self.device))
                except Exception as err:   # one trial's failure does not stop the sweep
                    errors[spec_key] = f"{type(err).__name__}: {err}"
                    say("trial %s: failed (attempt %d): %s", run_name, attempt + 1, err)
                else:
                    errors.pop(spec_key, None)
                    say("trial %s: finished", run_name)
                    break
        return errors
