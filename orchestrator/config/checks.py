"""Config checks: plain values (ranges, uniqueness, choices), then the registries
(models, pruning, eval, sources) and the disk.

The registries live in packages that may import torch; they are imported here,
lazily, so a plain ``import orchestrator.config`` stays cheap.
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Any

from orchestrator.config.schema import TRAINED_SPACE, Config, as_mapping
from orchestrator.errors import ConfigError
from orchestrator.storage.fsutil import is_remote


# (module, registry attribute) for each name a config can hold
REGISTRIES = {
    "models": ("models", "MODELS"),
    "vqvae": ("models", "VQVAE_PRESETS"),
    "embedders": ("models", "EMBEDDERS"),
    "pruners": ("pruning", "PRUNERS"),
    "metrics": ("eval", "METRICS"),
    "sources": ("orchestrator.data.sources", "SOURCES"),
}


def registry(kind: str) -> dict[str, Any]:
    """The registry dict for ``kind`` (a REGISTRIES key), imported on first use."""
    module, attr = REGISTRIES[kind]
    return getattr(importlib.import_module(module), attr)


def _check_name(value: str, kind: str, path: str) -> None:
    reg = registry(kind)
    if value not in reg:
        raise ConfigError(f"{path}: unknown name {value!r} (valid: {', '.join(sorted(reg))})")


def _check_file(path: str | None, key: str) -> None:
    local = path[len("file://"):] if path and path.startswith("file://") else path
    if local and not is_remote(local) and not os.path.exists(local):
        raise ConfigError(f"{key}: file not found: {path}")


def _param_key(message: str, params: dict[str, Any]) -> str | None:
    """The param a pruner's error message is about (it names it), if any."""
    for name in sorted(params, key=len, reverse=True):
        if re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", message):
            return name
    return None


def _positive(value: float, path: str, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        want = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"{path}: must be {want}, got {value}")


def _fraction(value: float, path: str) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{path}: must be in [0, 1), got {value}")


def _choice(value: Any, allowed: tuple, path: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{path}: {value!r} is not one of {', '.join(map(str, allowed))}")


def check_values(cfg: Config) -> None:
    """Value checks that need no registry: ranges, uniqueness, enumerations."""
    exp = cfg.experiment
    if not exp.name or "/" in exp.name:
        raise ConfigError(f"experiment.name: must be a non-empty name without '/', got {exp.name!r}")
    if not exp.seeds:
        raise ConfigError("experiment.seeds: needs at least one seed")
    if len(set(exp.seeds)) != len(exp.seeds):
        raise ConfigError(f"experiment.seeds: duplicate seeds in {list(exp.seeds)}")
    if not 0.0 <= cfg.data.max_skipped <= 1.0:
        raise ConfigError(f"data.max_skipped: the share of bad rows allowed must be in [0, 1], "
                          f"got {cfg.data.max_skipped}")
    names = set()
    for i, ds in enumerate(cfg.data.datasets):
        p = f"data.datasets[{i}]"
        if ds.name in names:
            raise ConfigError(f"{p}.name: duplicate dataset name {ds.name!r}")
        names.add(ds.name)
        _positive(ds.resolution, f"{p}.resolution")
        if ds.limit is not None:
            _positive(ds.limit, f"{p}.limit")
        if not 0.0 < ds.holdout < 1.0:
            raise ConfigError(f"{p}.holdout: the held-out reference share must be in (0, 1), "
                              f"got {ds.holdout}")
        for label, frac in (ds.skew or {}).items():
            if label != "*" and not label.lstrip("-").isdigit():
                raise ConfigError(f"{p}.skew.{label}: keys are integer labels or '*'")
            if not 0.0 <= frac <= 1.0:
                raise ConfigError(f"{p}.skew.{label}: keep fraction must be in [0, 1], got {frac}")
    pr = cfg.pruning
    for i, r in enumerate(pr.ratios):
        _fraction(r, f"pruning.ratios[{i}]")
    if len(set(pr.ratios)) != len(pr.ratios):
        raise ConfigError(f"pruning.ratios: duplicate ratios in {list(pr.ratios)}")
    labels = set()
    for i, m in enumerate(pr.methods):
        if m.label == "full":
            raise ConfigError(f"pruning.methods[{i}].label: 'full' is reserved for the baseline")
        if m.label in labels:
            raise ConfigError(f"pruning.methods[{i}].label: duplicate label {m.label!r} "
                      "(give each entry of the same method its own label)")
        labels.add(m.label)
        for ds_name in m.per_dataset:
            if ds_name not in names:
                raise ConfigError(f"pruning.methods[{i}].per_dataset.{ds_name}: no dataset of that "
                          f"name (datasets: {', '.join(sorted(names))})")
    if pr.methods and not pr.ratios:
        raise ConfigError("pruning.ratios: needs at least one ratio when methods are listed")
    if not pr.methods and not pr.baseline:
        raise ConfigError("pruning: no methods and baseline: false leaves no trial to run")
    positives = {
        "autoencoder": ("batch_size", "lr"), "embed": ("batch_size",),
        "proxy": ("steps", "batch_size", "lr", "log_points", "grad_checkpoints", "draws", "grand_draws", "el2n_draws",
                  "chunk"),
        "train": ("steps", "batch_size", "lr", "checkpoint_every", "log_every"),
        "sample": ("num_samples", "steps", "batch_size"),
        "eval": ("num_real", "prdc_k"),
        "resources": ("num_workers", "actor_pool_size"),
    }
    for section, keys in positives.items():
        for key in keys:
            _positive(getattr(getattr(cfg, section), key), f"{section}.{key}")
    ae = cfg.autoencoder
    _positive(ae.train_steps, "autoencoder.train_steps", allow_zero=ae.checkpoint is not None)
    _positive(cfg.train.weight_decay, "train.weight_decay", allow_zero=True)
    _positive(cfg.eval.centroids_k, "eval.centroids_k", allow_zero=True)
    if not 0.0 < cfg.eval.copy_quantile < 1.0:
        raise ConfigError(f"eval.copy_quantile: must be in (0, 1), got {cfg.eval.copy_quantile}")
    _fraction(cfg.train.ema_decay, "train.ema_decay")
    _fraction(cfg.model.class_dropout, "model.class_dropout")
    _choice(cfg.train.precision, ("fp32", "bf16", "fp16"), "train.precision")
    _choice(cfg.sample.method, ("euler", "heun"), "sample.method")
    _choice(cfg.proxy.noise, ("per_sample", "shared"), "proxy.noise")   # pruning.stats.NOISE_MODES
    _choice(cfg.proxy.grand_params, ("output", "all"), "proxy.grand_params")
    _positive(cfg.sample.cfg_scale, "sample.cfg_scale", allow_zero=True)
    res = cfg.resources
    _choice(res.executor, ("ray", "local"), "resources.executor")   # runtime.executor.EXECUTORS
    if res.executor == "local" and res.num_workers != 1:
        raise ConfigError(f"resources.num_workers: the local executor runs one worker, got "
                          f"{res.num_workers} (set 1, or resources.executor: ray for DDP)")
    _positive(res.gpus_per_actor, "resources.gpus_per_actor", allow_zero=True)
    _positive(res.max_failures, "resources.max_failures", allow_zero=True)
    if isinstance(res.cpus_per_worker, str):
        _choice(res.cpus_per_worker, ("auto",), "resources.cpus_per_worker")
    else:
        _positive(res.cpus_per_worker, "resources.cpus_per_worker")
    if isinstance(res.max_concurrent_trials, str):
        _choice(res.max_concurrent_trials, ("auto",), "resources.max_concurrent_trials")
    else:
        _positive(res.max_concurrent_trials, "resources.max_concurrent_trials")
    if not cfg.embed.embedders:
        raise ConfigError("embed.embedders: needs at least one embedder")
    if not cfg.eval.metrics:
        raise ConfigError("eval.metrics: needs at least one metric")
    _check_eval_spaces(cfg)
    _check_analysis(cfg)


def _check_analysis(cfg: Config) -> None:
    """The analysis: section: ranges, its space one of eval.embedders, its labels methods.

    The checks are :func:`eval.analysis.plan.resolve_plan`'s (one definition, pure); the
    space's metric suffix is resolved at report time, where the embedders are imported.
    """
    # lazy: eval.analysis (pandas, scipy) costs ~1-2 s; `import orchestrator` (--help) imports config
    from eval.analysis.plan import AnalysisError, resolve_plan

    try:
        resolve_plan(as_mapping(cfg.analysis), cfg.eval.primary or "",
                     cfg.to_dict()["pruning"]["methods"], cfg.eval.embedders, short="")
    except AnalysisError as e:
        raise ConfigError(str(e)) from None


def _check_eval_spaces(cfg: Config) -> None:
    """eval.embedders non-empty and unique, eval.primary one of them, the classifier recipe."""
    ev = cfg.eval
    if not ev.embedders:
        raise ConfigError("eval.embedders: needs at least one evaluation space")
    if len(set(ev.embedders)) != len(ev.embedders):
        raise ConfigError(f"eval.embedders: duplicate spaces in {list(ev.embedders)}")
    if ev.primary not in ev.embedders:
        raise ConfigError(f"eval.primary: {ev.primary!r} is not one of eval.embedders "
                          f"{list(ev.embedders)}")
    for key in ("steps", "batch_size", "lr"):
        _positive(getattr(ev.classifier, key), f"eval.classifier.{key}")
    if not 0.0 < ev.classifier.test_share < 1.0:
        raise ConfigError(f"eval.classifier.test_share: must be in (0, 1), got "
                          f"{ev.classifier.test_share}")


def check_registries_and_data(cfg: Config) -> None:
    """Every registry name, data path, weight file and cluster count in ``cfg``."""
    # lazy: data.sources (numpy, PIL, pyarrow) costs ~0.3 s; `import orchestrator` (--help) imports config
    from orchestrator.data import sources

    counts: dict[str, int | None] = {}
    for i, ds in enumerate(cfg.data.datasets):
        p = f"data.datasets[{i}]"
        _check_name(ds.source, "sources", f"{p}.source")
        counts[ds.name] = sources.check_dataset(ds, p)

    _check_name(cfg.autoencoder.preset, "vqvae", "autoencoder.preset")
    _check_file(cfg.autoencoder.checkpoint, "autoencoder.checkpoint")
    _check_name(cfg.model.preset, "models", "model.preset")
    _check_name(cfg.proxy.model, "models", "proxy.model")
    for i, name in enumerate(cfg.embed.embedders):
        _check_name(name, "embedders", f"embed.embedders[{i}]")
    if TRAINED_SPACE in cfg.embed.weights:
        raise ConfigError(f"embed.weights.{TRAINED_SPACE}: this space is trained per dataset "
                          "(recipe: eval.classifier); remove the key")
    for name, path in cfg.embed.weights.items():
        _check_name(name, "embedders", f"embed.weights.{name}")
        _check_file(path, f"embed.weights.{name}")
    for i, name in enumerate(cfg.eval.embedders):
        _check_name(name, "embedders", f"eval.embedders[{i}]")
    if TRAINED_SPACE in cfg.eval.embedders or TRAINED_SPACE in cfg.embed.embedders:
        for i, ds in enumerate(cfg.data.datasets):
            src = sources.SOURCES.get(ds.source)
            if src is not None and not src.labelled(ds):
                raise ConfigError(f"eval.embedders: {TRAINED_SPACE!r} needs labelled training "
                                  f"images, dataset {ds.name!r} (data.datasets[{i}]) has none")
    for i, name in enumerate(cfg.eval.metrics):
        _check_name(name, "metrics", f"eval.metrics[{i}]")
    for i, m in enumerate(cfg.pruning.methods):
        _check_method(cfg, i, m, counts)


def _check_method(cfg: Config, i: int, m: Any, counts: dict[str, int | None]) -> None:
    """Name, params (per dataset), embedder and cluster count of one method entry."""
    p = f"pruning.methods[{i}]"
    _check_name(m.name, "pruners", f"{p}.name")
    for ds_name, n in counts.items():
        raw = m.params_for(ds_name)
        try:
            pruner = m.build_pruner(ds_name)  # the pruner validates its own params
        except (TypeError, ValueError) as e:
            key = _param_key(str(e), raw)
            if key in m.per_dataset.get(ds_name, {}):
                key = f"per_dataset.{ds_name}.{key}"
            raise ConfigError(f"{p}{'.' + key if key else ''}: {e}") from None
        # defaults filled in by the pruner (clustering's embedder and k) count too
        emb = getattr(pruner, "embedder", raw.get("embedder"))
        params = {**getattr(pruner, "params", {}), **raw}
        if isinstance(emb, str):
            _check_name(emb, "embedders", f"{p}.embedder")
            if emb not in cfg.embed.embedders:
                raise ConfigError(f"{p}.embedder: {emb!r} must also be listed in "
                                  f"embed.embedders {list(cfg.embed.embedders)}")
        k = params.get("k")
        if isinstance(k, int) and not isinstance(k, bool) and n is not None and k > n:
            key = f"per_dataset.{ds_name}.k" if "k" in m.per_dataset.get(ds_name, {}) else "k"
            raise ConfigError(f"{p}.{key}: k={k} clusters exceeds the {n} images of "
                              f"dataset {ds_name!r}")


def circular_selections(cfg: Config) -> list[tuple[str, str]]:
    """(method label, space) for each method that selects in an evaluation space.

    A method selects in the space of its pruner's ``embedder`` (clustering, prototypes,
    SemDeDup, CCS); its metrics in that space are rewarded by construction.
    """
    out = []
    for m in cfg.pruning.methods:
        for ds in cfg.data.datasets:
            emb = getattr(m.build_pruner(ds.name), "embedder", None)
            if emb in cfg.eval.embedders and (m.label, emb) not in out:
                out.append((m.label, emb))
    return out


def circularity_warnings(cfg: Config) -> list[str]:
    """One line per method that selects in an evaluation space (see circular_selections)."""
    return [f"warning: method {label} selects in evaluation space {space}: its metrics in "
            f"that space are rewarded by construction"
            + ("; it is eval.primary, so its verdict rows are marked" if space == cfg.eval.primary
               else "") for label, space in circular_selections(cfg)]


def describe_references(cfg: Config) -> str:
    """One line per dataset: where its held-out reference comes from and its size
    (printed by ``--dry-run``; the metrics compare against it)."""
    # lazy: data.sources (numpy, PIL, pyarrow) costs ~0.3 s; `import orchestrator` (--help) imports config
    from orchestrator.data.sources import reference_count, reference_origin

    lines = ["held-out reference (metrics compare against it; nothing trains on it):"]
    for ds in cfg.data.datasets:
        n = reference_count(ds, cfg.eval.num_real)
        size = (f"{n} images" if n is not None
                else f"up to {cfg.eval.num_real} images (counted at run time)")
        lines.append(f"  {ds.name}: {reference_origin(ds)}, {size} (cap eval.num_real "
                     f"= {cfg.eval.num_real})")
    return "\n".join(lines)
