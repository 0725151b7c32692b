"""The config's shape: one frozen dataclass per YAML section, and the trial grid.

Field defaults here are the defaults of the YAML keys. Nothing in this module reads
files or checks values: :mod:`orchestrator.config.loader` builds these classes from
YAML and :mod:`orchestrator.config.checks` validates them. It imports nothing of ours but
``DatasetConfig``, the dataset entry, from :mod:`orchestrator.data` (which imports nothing
of ours), so every other module may import it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from orchestrator.data import DatasetConfig


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    seeds: tuple[int, ...] = (0,)
    output_dir: str = "outputs"


@dataclass(frozen=True)
class DataConfig:
    """``max_skipped``: the largest share of a dataset's rows that may be bad (undecodable,
    truncated or empty files, bad parquet rows, bad tar members) before the run stops with a
    one-line error; bad rows under it are skipped and listed in
    ``<output_dir>/data/<dataset>/skipped.csv``."""

    datasets: tuple[DatasetConfig, ...]
    max_skipped: float = 0.01


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
    draws: int = 3
    chunk: int = 64
    noise: str = "shared"   # "shared" | "per_sample" (pruning.stats.fixed_draws; stat_stability.md)
    grand_params: str = "output"   # GraNd gradient over "output" (the DiT's output layer) | "all"
    grand_draws: int = 12          # GraNd's K draws (the output-layer gradient is cheap)
    el2n_draws: int = 12           # EL2N's K draws at the last step (forward passes only)


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

    def build_pruner(self, dataset: str) -> Any:
        """The ``pruning.PRUNERS`` instance for ``dataset`` (the one place pruners are built).

        Raises:
            TypeError, ValueError: the pruner rejects a param (its message names it).
        """
        # lazy: pruning (with numpy) costs ~0.2 s; `import orchestrator` (--help, ~0.1 s) imports schema
        from pruning import PRUNERS

        return PRUNERS[self.name](**self.params_for(dataset))


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


TRAINED_SPACE = "classifier"   # the evaluation space trained per dataset (models/classifier.py)


@dataclass(frozen=True)
class ClassifierConfig:
    """Recipe of the ``classifier`` evaluation space (defaults: models/classifier.py)."""

    steps: int = 800
    batch_size: int = 128
    lr: float = 3.0e-3
    test_share: float = 0.1     # labelled training images held out for its test accuracy
    seed: int = 0


@dataclass(frozen=True)
class EvalConfig:
    """``embedders``: the evaluation spaces (``models.EMBEDDERS`` keys), each metric is
    reported per space; ``primary``: the space of the verdicts (None = the first)."""

    embedders: tuple[str, ...] = ("effnet_lite0",)
    primary: str | None = None
    metrics: tuple[str, ...] = ("fd", "prdc", "vendi", "memorization")
    num_real: int = 2000
    prdc_k: int = 3
    centroids_k: int = 0        # memorization: distance to k-means centres (0 = not measured)
    copy_quantile: float = 0.05  # memorization: mem_copy_rate's threshold quantile
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)


@dataclass(frozen=True)
class ResourcesConfig:
    executor: str = "ray"                      # ray | local (runtime/executor.py)
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
class AnalysisConfig:
    """The pre-registered analysis (issue 24), fixed before the run and logged with it;
    resolved and run by :mod:`eval.analysis` (its ``plan.DEFAULTS`` mirror these defaults).

    ``metrics``: the primary metric keys, each measured in ``space`` (column
    ``<key>_<space short>``: the paper's F-score and FD); ``space``: an ``eval.embedders``
    entry, None = ``eval.primary`` (choose one no method selects in); ``trend_metrics``:
    (d)'s keys in the same space; ``baseline``: every method is compared with it and with
    full data; ``contestant``: (b)'s clustering label, None = the paper's code default
    (the first ``clustering`` entry with keep farthest, mode proportional; the other
    variants are exploratory); ``balanced``: (c)'s label, None = the first clustering
    entry with mode balanced; ``high_ratio``: (a), (b) and the baseline comparisons use
    ratios >= it; ``margin``: (a)'s TOST equivalence margin, a share of the full-data
    mean; ``alpha``: family-wise error rate of each Holm family; ``power``: the power at
    which each verdict's minimal detectable effect is stated."""

    metrics: tuple[str, ...] = ("f_score", "fd")
    space: str | None = None
    trend_metrics: tuple[str, ...] = ("mem_nn_mean", "mem_copy_rate")
    baseline: str = "random"
    contestant: str | None = None
    balanced: str | None = None
    high_ratio: float = 0.75
    margin: float = 0.10
    alpha: float = 0.05
    power: float = 0.80


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
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)

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
    "mlflow": MlflowConfig, "storage": StorageConfig, "analysis": AnalysisConfig,
}


def as_mapping(cfg: Any) -> Mapping[str, Any]:
    """A section dataclass as a dict (for cache keys and MLflow params)."""
    return _plain(dataclasses.asdict(cfg))
