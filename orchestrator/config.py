"""YAML experiment config -> frozen dataclasses (one per section), with validation.

``load_config(path, overrides)`` reads the YAML with ``yaml.safe_load`` (following a
top-level ``extends: base.yaml``), applies
``--set a.b[0].c=value`` overrides (values are YAML-typed), builds the dataclasses,
resolves defaults (absolute output paths, MLflow URI, cache and Ray storage), and
checks everything a user can get wrong: unknown keys, wrong types, registry names,
ratios, step and batch sizes, data paths, cluster counts. Every problem is raised
as :class:`ConfigError` whose message starts with the key path, e.g.
``pruning.methods[2].k: k=50 exceeds the 40 images of dataset 'fmnist'``.

Relative paths (``experiment.output_dir``, ``data.datasets[i].path``) are resolved
against the directory the CLI was started in (``base_dir``). Under ``ray job
submit`` that directory is the job's temporary working dir, so cluster configs
should use absolute paths or ``s3://`` / ``gs://`` URIs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from orchestrator import config_schema as _schema


class ConfigError(ValueError):
    """A mistake in the user's config or command line (exit code 2 in the CLI)."""


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    seeds: tuple[int, ...] = (0,)
    output_dir: str = "outputs"


@dataclass(frozen=True)
class DatasetConfig:
    """One dataset entry; ``source`` is an ``orchestrator.sources.SOURCES`` key."""

    name: str
    source: str
    path: str | None = None
    split: str | None = None
    resolution: int = 32
    limit: int | None = None
    conditional: bool = False
    skew: dict[str, float] | None = None   # label (as str) or "*" -> keep fraction
    class_subfolders: bool = False          # image_folder: class = first subfolder
    seed: int = 0                           # seeds the limit / skew subsample


@dataclass(frozen=True)
class DataConfig:
    datasets: tuple[DatasetConfig, ...]


@dataclass(frozen=True)
class AutoencoderConfig:
    preset: str = "vq-f4-c4"
    checkpoint: str | None = None
    train_steps: int = 600
    batch_size: int = 64
    lr: float = 2.0e-4


@dataclass(frozen=True)
class EmbedConfig:
    embedders: tuple[str, ...] = ("effnet_lite0",)
    batch_size: int = 128
    weights: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProxyConfig:
    model: str = "DiT-Micro/2"
    steps: int = 400
    batch_size: int = 64
    lr: float = 3.0e-4
    log_points: int = 8
    grad_checkpoints: int = 1
    draws: int = 2
    chunk: int = 64


@dataclass(frozen=True)
class MethodConfig:
    """A pruning method: ``name`` is a ``pruning.PRUNERS`` key, ``params`` go to it.

    ``per_dataset`` overrides params for one dataset (e.g. the paper's k = 24 for
    CelebA-HQ and 1000 for ImageNet under one label): build the pruner with
    ``params_for(dataset_name)``, not ``params``.
    """

    name: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)
    per_dataset: dict[str, dict[str, Any]] = field(default_factory=dict)

    def params_for(self, dataset: str) -> dict[str, Any]:
        """The params for ``dataset``: ``params`` updated by ``per_dataset[dataset]``."""
        return {**self.params, **self.per_dataset.get(dataset, {})}


@dataclass(frozen=True)
class PruningConfig:
    ratios: tuple[float, ...] = (0.5,)
    baseline: bool = True
    methods: tuple[MethodConfig, ...] = ()


@dataclass(frozen=True)
class ModelConfig:
    preset: str = "DiT-Micro/2"
    class_dropout: float = 0.1


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    batch_size: int = 64
    lr: float = 3.0e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.99
    checkpoint_every: int = 100
    log_every: int = 25
    precision: str = "fp32"


@dataclass(frozen=True)
class SampleConfig:
    num_samples: int = 500
    steps: int = 16
    method: str = "heun"
    cfg_scale: float = 1.5
    batch_size: int = 250


@dataclass(frozen=True)
class EvalConfig:
    embedder: str = "effnet_lite0"
    metrics: tuple[str, ...] = ("fd", "prdc", "vendi", "memorization")
    num_real: int = 2000
    prdc_k: int = 3


@dataclass(frozen=True)
class ResourcesConfig:
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float | str = "auto"      # "auto" = a fraction of the cluster
    gpus_per_actor: float = 0.0
    actor_pool_size: int = 1
    max_concurrent_trials: int | str = "auto"
    max_failures: int = 1


@dataclass(frozen=True)
class MlflowConfig:
    tracking_uri: str | None = None            # resolved: sqlite:////abs/out/mlflow.db
    experiment_name: str | None = None         # resolved: experiment.name
    artifact_location: str | None = None       # resolved: <output_dir>/mlartifacts


@dataclass(frozen=True)
class StorageConfig:
    cache_dir: str | None = None               # resolved: <output_dir>/cache
    ray_storage: str | None = None             # resolved: <output_dir>/ray_results


@dataclass(frozen=True)
class Trial:
    """One training run of the sweep; ``method == "full"`` is the unpruned baseline."""

    dataset: str
    method: str
    ratio: float
    seed: int

    @property
    def name(self) -> str:
        """A filesystem- and MLflow-safe run name, e.g. ``fmnist-random-r50-s0``."""
        return f"{self.dataset}-{self.method}-r{round(self.ratio * 100):02d}-s{self.seed}"


FULL_METHOD = "full"


@dataclass(frozen=True)
class Config:
    experiment: ExperimentConfig
    data: DataConfig
    autoencoder: AutoencoderConfig
    embed: EmbedConfig
    proxy: ProxyConfig
    pruning: PruningConfig
    model: ModelConfig
    train: TrainConfig
    sample: SampleConfig
    eval: EvalConfig
    resources: ResourcesConfig
    mlflow: MlflowConfig
    storage: StorageConfig

    def dataset(self, name: str) -> DatasetConfig:
        """The dataset entry called ``name`` (KeyError if absent)."""
        for ds in self.data.datasets:
            if ds.name == name:
                return ds
        raise KeyError(name)

    def method(self, label: str) -> MethodConfig:
        """The pruning method entry with this ``label`` (KeyError if absent)."""
        for m in self.pruning.methods:
            if m.label == label:
                return m
        raise KeyError(label)

    def trial_grid(self) -> list[Trial]:
        """All trials: per seed and dataset, the full-data baseline then method x ratio."""
        trials = []
        for seed in self.experiment.seeds:
            for ds in self.data.datasets:
                if self.pruning.baseline:
                    trials.append(Trial(ds.name, FULL_METHOD, 0.0, seed))
                for m in self.pruning.methods:
                    for ratio in self.pruning.ratios:
                        trials.append(Trial(ds.name, m.label, ratio, seed))
        return trials

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-able) in the same shape as the YAML file."""
        out = dataclasses.asdict(self)
        out["pruning"]["methods"] = [
            {"name": m.name, "label": m.label, **m.params,
             **({"per_dataset": m.per_dataset} if m.per_dataset else {})}
            for m in self.pruning.methods
        ]
        return _plain(out)

    def config_hash(self) -> str:
        """sha256 of everything that determines results (not paths or resources)."""
        d = self.to_dict()
        for section in ("resources", "mlflow", "storage"):
            d.pop(section)
        d["experiment"].pop("output_dir")
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def _plain(x: Any) -> Any:
    """Tuples -> lists recursively, so yaml.safe_dump / json can write it."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


SECTIONS: dict[str, type] = {
    "experiment": ExperimentConfig, "data": DataConfig,
    "autoencoder": AutoencoderConfig, "embed": EmbedConfig, "proxy": ProxyConfig,
    "pruning": PruningConfig, "model": ModelConfig, "train": TrainConfig,
    "sample": SampleConfig, "eval": EvalConfig, "resources": ResourcesConfig,
    "mlflow": MlflowConfig, "storage": StorageConfig,
}


def load_config(path: str | os.PathLike, overrides: Iterable[str] = (),
                base_dir: str | os.PathLike | None = None, check: bool = True) -> Config:
    """Load, override, build, resolve and validate a config file.

    Args:
        path: the YAML file.
        overrides: ``"a.b=value"`` strings (``--set``); list indices as ``a[0].b``.
        base_dir: directory relative paths are resolved against (default: cwd).
        check: also run the checks that touch registries and the filesystem.

    Raises:
        ConfigError: the file is missing or not valid YAML, or a key is wrong.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {path}")
    raw = _schema.read_yaml(p, ConfigError)
    return config_from_dict(raw, overrides, base_dir=base_dir, check=check)


def config_from_dict(raw: Any, overrides: Iterable[str] = (),
                     base_dir: str | os.PathLike | None = None, check: bool = True) -> Config:
    """Same as :func:`load_config` for an already parsed YAML document."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"<root>: expected a mapping of sections, got {type(raw).__name__}")
    raw = json.loads(json.dumps(raw, default=str))  # deep copy; overrides mutate it
    for ov in overrides:
        _schema.apply_override(raw, ov, ConfigError)
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section (valid: {', '.join(SECTIONS)})")
    for req in ("experiment", "data"):
        if req not in raw:
            raise ConfigError(f"{req}: required section is missing")
    cfg = _schema.build(raw, SECTIONS, ConfigError, DatasetConfig, DataConfig,
                        MethodConfig, PruningConfig, Config)
    cfg = _resolve(cfg, Path(base_dir) if base_dir is not None else Path.cwd())
    _schema.check_values(cfg, ConfigError)
    if check:
        from orchestrator import config_checks
        config_checks.check_registries_and_data(cfg)
    return cfg


def _is_remote(uri: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*://", uri)) and not uri.startswith("file://")


def _abs(path: str, base: Path) -> str:
    """Absolute local path (relative to base) or the remote URI unchanged."""
    if _is_remote(path):
        return path
    if path.startswith("file://"):
        path = path[len("file://"):]
    p = Path(path).expanduser()
    return str((p if p.is_absolute() else base / p).resolve())


def _resolve(cfg: Config, base: Path) -> Config:
    """Fill path defaults: absolute output dir, MLflow store, cache and Ray storage."""
    out = _abs(cfg.experiment.output_dir, base)
    remote = _is_remote(out)
    datasets = tuple(
        dataclasses.replace(d, path=_abs(d.path, base)) if d.path else d
        for d in cfg.data.datasets)
    tracking = cfg.mlflow.tracking_uri
    if tracking is None:
        if remote:
            raise ConfigError("mlflow.tracking_uri: required when experiment.output_dir is "
                              f"remote ({out}); e.g. http://mlflow-server:5000")
        tracking = f"sqlite:///{out}/mlflow.db"   # sqlite:////abs/... = absolute path
    elif tracking.startswith("sqlite:///") and not tracking.startswith("sqlite:////"):
        tracking = "sqlite:///" + _abs(tracking[len("sqlite:///"):], base)
    return dataclasses.replace(
        cfg,
        experiment=dataclasses.replace(cfg.experiment, output_dir=out),
        data=DataConfig(datasets),
        mlflow=MlflowConfig(
            tracking_uri=tracking,
            experiment_name=cfg.mlflow.experiment_name or cfg.experiment.name,
            artifact_location=_abs(cfg.mlflow.artifact_location or f"{out}/mlartifacts", base)),
        storage=StorageConfig(
            cache_dir=_abs(cfg.storage.cache_dir or f"{out}/cache", base),
            ray_storage=_abs(cfg.storage.ray_storage or f"{out}/ray_results", base)),
    )


def apply_override(raw: dict, override: str) -> None:
    """Apply one ``a.b[0].c=value`` override (``--set``) to a raw config dict in place."""
    _schema.apply_override(raw, override, ConfigError)


def dump_yaml(cfg: Config) -> str:
    """The resolved config as YAML (what ``--dry-run`` prints and runs log)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)


def as_mapping(cfg: Any) -> Mapping[str, Any]:
    """A section dataclass as a dict (for cache keys and MLflow params)."""
    return _plain(dataclasses.asdict(cfg))
