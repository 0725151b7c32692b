"""Typed trial records: what a trial is given (:class:`TrialSpec`) and what it returns
(:class:`TrialResult`), each with ``to_json`` / ``from_json``.

One name per concept:

- a **trial** is one point of the grid, :class:`orchestrator.config.Trial`
  (dataset, method, ratio, seed; ``trial.name`` e.g. ``fmnist-random-r50-s0``);
- the **trial key** (``spec.key``) is the cache key of its result;
- the **run name** (``spec.run_name``) names its Ray Train run and Tune trial;
- **files** of a result are cache keys (:class:`TrialFiles`); the report stage copies
  them to local paths for MLflow, it never rewrites the record.

The JSON shapes are the ones ``result.json`` and the trial spec have always had, so
records already in a cache load unchanged (``from_json`` also drops the extra keys the
Ray Train config adds, ``threads`` and ``use_gpu``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from orchestrator.config.schema import (ClassifierConfig, EvalConfig, ModelConfig, SampleConfig,
                                        TrainConfig, Trial)


def trial_to_json(trial: Trial) -> dict[str, Any]:
    """``{"dataset", "method", "ratio", "seed", "name"}`` (the name for readers of the JSON)."""
    return {"dataset": trial.dataset, "method": trial.method, "ratio": float(trial.ratio),
            "seed": trial.seed, "name": trial.name}


def trial_from_json(d: dict[str, Any]) -> Trial:
    """Inverse of :func:`trial_to_json` (``name`` is derived, not stored)."""
    return Trial(d["dataset"], d["method"], float(d["ratio"]), int(d["seed"]))


@dataclass(frozen=True)
class TrialInputs:
    """Cache keys of a trial's inputs."""

    latents: str    # arrays ids (N,), labels (N,), latents (N, C, h, w)
    subset: str     # arrays indices (n_train,) into the latents; json manifest
    vqvae: str      # bytes of models.vqvae.save_vqvae
    features: dict[str, str]   # eval embedder -> arrays features (N, D) of the dataset
    weights: dict[str, str] = field(default_factory=dict)  # trained space -> bytes weight file
    # eval embedder name -> arrays ids (R,), labels (R,), features (R, D) of the held-out
    # reference (what the metrics compare against; never trained on)
    reference: dict[str, str] = field(default_factory=dict)
    # eval embedder name -> arrays centroids (k, D): k-means centres of the full training
    # set in that space (``eval.centroids_k``), computed once per dataset by the driver
    centroids: dict[str, str] = field(default_factory=dict)
    # eval embedder name -> arrays train_nn (N,): each training image's distance to its
    # nearest other one in that space (mem_copy_rate's threshold), once per dataset
    train_nn: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TrialSpec:
    """Everything one trial needs, by value or by cache key (JSON-able via ``to_json``).

    Attributes:
        key: the trial key (cache key of its :class:`TrialResult`).
        cache_root: root of the artifact cache the keys live in.
        run_name: fixed Ray Train run name (checkpoints live under it).
        trial: the grid point.
        params: logged to MLflow as the run's params (n_train, subset_hash, ...).
        inputs: cache keys of latents, subset, VQ-VAE, features per evaluation space,
            the held-out reference's features per space and the weight files of trained
            spaces (the classifier).
        conditional: class-conditional training and sampling.
        num_classes: classes of the dataset (0 when unlabelled).
        model, train, sample, eval: the config sections.
        eval_weights: eval embedder -> its local weight file (``embed.weights``; absent =
            its default).
    """

    key: str
    cache_root: str
    run_name: str
    trial: Trial
    params: dict[str, Any]
    inputs: TrialInputs
    conditional: bool
    num_classes: int
    model: ModelConfig
    train: TrainConfig
    sample: SampleConfig
    eval: EvalConfig
    eval_weights: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "cache_root": self.cache_root, "run_name": self.run_name,
                "trial": trial_to_json(self.trial), "params": dict(self.params),
                "inputs": dataclasses.asdict(self.inputs), "conditional": self.conditional,
                "num_classes": self.num_classes, "model": dataclasses.asdict(self.model),
                "train": dataclasses.asdict(self.train), "sample": dataclasses.asdict(self.sample),
                "eval": {**dataclasses.asdict(self.eval), "metrics": list(self.eval.metrics),
                         "embedders": list(self.eval.embedders)},
                "eval_weights": dict(self.eval_weights)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrialSpec:
        ev = dict(d["eval"])
        ev["metrics"], ev["embedders"] = tuple(ev["metrics"]), tuple(ev["embedders"])
        ev["classifier"] = ClassifierConfig(**ev["classifier"])
        return cls(key=d["key"], cache_root=d["cache_root"], run_name=d["run_name"],
                   trial=trial_from_json(d["trial"]), params=dict(d["params"]),
                   inputs=TrialInputs(**{**d["inputs"],
                                         "reference": dict(d["inputs"].get("reference") or {}),
                                         "centroids": dict(d["inputs"].get("centroids") or {}),
                                         "train_nn": dict(d["inputs"].get("train_nn") or {})}),
                   conditional=bool(d["conditional"]),
                   num_classes=int(d["num_classes"]), model=ModelConfig(**d["model"]),
                   train=TrainConfig(**d["train"]), sample=SampleConfig(**d["sample"]),
                   eval=EvalConfig(**ev), eval_weights=dict(d.get("eval_weights") or {}))


@dataclass(frozen=True)
class TrialFiles:
    """Cache keys of a result's files: the sample grid PNG (bytes), the subset manifest (json)."""

    grid: str
    manifest: str


@dataclass(frozen=True)
class TrialResult:
    """What a finished trial returns; cached as JSON under the trial key, written last.

    Attributes:
        key: the trial key.
        trial: the grid point.
        params: the spec's params.
        metrics: metric name -> value (``fid``, ``fd_<embedder>``, ``precision``, ...).
        loss_curve: ``[[step, mean loss over the log window], ...]``.
        timing: seconds of ``train_s``, ``sample_s``, ``eval_s``.
        resumed_from_step: 0, or the checkpoint step a cut run continued from.
        world_size: DDP ranks of the training run.
        finished_at: unix time.
        files: cache keys of the sample grid and the subset manifest.
        node_id: the Ray node the trial ran on (None outside Ray), for multi-node checks.
    """

    key: str
    trial: Trial
    params: dict[str, Any]
    metrics: dict[str, float]
    loss_curve: list[list[float]]
    timing: dict[str, float]
    resumed_from_step: int
    world_size: int
    finished_at: float
    files: TrialFiles
    node_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)   # unknown keys of older records

    def to_json(self) -> dict[str, Any]:
        """The JSON shape of ``result.json``; ``node_id`` only when the trial ran under Ray."""
        out = {**self.extra, "key": self.key, "trial": trial_to_json(self.trial),
                "params": dict(self.params), "metrics": dict(self.metrics),
                "loss_curve": [list(p) for p in self.loss_curve], "timing": dict(self.timing),
                "resumed_from_step": self.resumed_from_step, "world_size": self.world_size,
                "finished_at": self.finished_at, "files": dataclasses.asdict(self.files)}
        if self.node_id is not None:
            out["node_id"] = self.node_id
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrialResult:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(key=d["key"], trial=trial_from_json(d["trial"]), params=dict(d["params"]),
                   metrics={k: float(v) for k, v in d["metrics"].items()},
                   loss_curve=[list(p) for p in d.get("loss_curve") or []],
                   timing=dict(d.get("timing") or {}),
                   resumed_from_step=int(d.get("resumed_from_step", 0)),
                   world_size=int(d.get("world_size", 1)), finished_at=float(d.get("finished_at", 0.0)),
                   files=TrialFiles(**d["files"]), node_id=d.get("node_id"),
                   extra={k: v for k, v in d.items() if k not in known})

    def row(self) -> dict[str, Any]:
        """The report table's row: grid point and metrics (``report.comparison_table``)."""
        return {"dataset": self.trial.dataset, "method": self.trial.method,
                "ratio": self.trial.ratio, "seed": self.trial.seed, **self.metrics}
