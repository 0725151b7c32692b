"""The trial plan: the sweep's grid, enumerated once from the config.

Every part of a run that walks the grid reads a :class:`TrialPlan`: the score stage (one
scoring job per seed, dataset and method, then that method's subsets at every ratio), the
subset of the full-data baseline, the sweep's trial specs, the report, ``--dry-run``'s
grid and cost estimate. So the trials a run trains, the subsets it selects and the rows its
dry-run prints cannot disagree.

Order: per seed, per dataset, the full-data baseline first, then method x ratio in config
order (the order of the trial table and of the Ray Tune trials).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from orchestrator.config.schema import FULL_METHOD, Config, MethodConfig, Trial


@dataclass(frozen=True)
class ScoreJob:
    """One scoring run: ``method`` scores ``dataset`` with ``seed``'s proxy, then selects a
    subset at each of ``ratios`` (the method's trials of that seed and dataset)."""

    seed: int
    dataset: str
    method: MethodConfig
    ratios: tuple[float, ...]


@dataclass(frozen=True)
class TrialPlan:
    """The grid of a config: its trials, its scoring jobs and its baselines.

    Build it with :meth:`from_config`; it holds no artifacts, so the dry-run reads the same
    plan the run executes.
    """

    trials: tuple[Trial, ...]
    jobs: tuple[ScoreJob, ...]

    @classmethod
    def from_config(cls, cfg: Config) -> TrialPlan:
        """The plan of ``cfg``: per seed and dataset, the baseline (``pruning.baseline``)
        then every method at every ratio."""
        ratios = tuple(float(r) for r in cfg.pruning.ratios)
        trials: list[Trial] = []
        jobs: list[ScoreJob] = []
        for seed in cfg.experiment.seeds:
            for ds in cfg.data.datasets:
                if cfg.pruning.baseline:
                    trials.append(Trial(ds.name, FULL_METHOD, 0.0, seed))
                for m in cfg.pruning.methods:
                    jobs.append(ScoreJob(seed, ds.name, m, ratios))
                    trials += [Trial(ds.name, m.label, r, seed) for r in ratios]
        return cls(tuple(trials), tuple(jobs))

    def __len__(self) -> int:
        return len(self.trials)

    def __iter__(self) -> Iterator[Trial]:
        return iter(self.trials)

    def baselines(self) -> list[Trial]:
        """The full-data trials (one per seed and dataset when the baseline is on)."""
        return [t for t in self.trials if t.method == FULL_METHOD]

    def subset_keys(self) -> list[tuple[str, str, float, int]]:
        """``(dataset, method, ratio, seed)`` of every trial: the subsets the run selects."""
        return [(t.dataset, t.method, float(t.ratio), t.seed) for t in self.trials]
