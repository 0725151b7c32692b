"""Raw YAML dict -> config dataclasses: ``--set`` overrides, key and type checks,
then value checks.

Kept apart from ``config.py`` so that module stays a readable list of sections.
Every error names the key path (``train.batch_size``, ``data.datasets[1].limit``).
Only plain values are checked here; registry names and data paths are checked in
``config_checks.py``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml

_MISSING = dataclasses.MISSING


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str, err: type[Exception]) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        alts = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(alts) < len(typing.get_args(tp)):
            return None
        if len(alts) == 1:  # Optional[X]: X's own message names the inner key
            return _coerce(value, alts[0], path, err)
        errors = []
        for alt in typing.get_args(tp):
            try:
                return _coerce(value, alt, path, err)
            except err as e:
                errors.append(str(e))
        names = " or ".join(_type_name(a) for a in typing.get_args(tp))
        raise err(f"{path}: expected {names}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise err(f"{path}: expected null, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise err(f"{path}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise err(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise err(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise err(f"{path}: expected a string, got {value!r}")
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a scalar where a list is expected: `seeds: 0`
        if not isinstance(value, list):
            raise err(f"{path}: expected a list, got {value!r}")
        return tuple(_coerce(v, item_tp, f"{path}[{i}]", err) for i, v in enumerate(value))
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise err(f"{path}: expected a mapping, got {value!r}")
        return {str(k): _coerce(v, val_tp, f"{path}.{k}", err) for k, v in value.items()}
    raise TypeError(f"unsupported annotation {tp!r} at {path}")  # a bug here, not the user's


def build_section(cls: type, raw: Any, path: str, err: type[Exception]) -> Any:
    """One dataclass from one mapping: unknown keys, missing keys and types checked."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise err(f"{path}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            raise err(f"{path}.{key}: unknown key (valid: {', '.join(names)})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in raw:
            kwargs[f.name] = _coerce(raw[f.name], hints[f.name], f"{path}.{f.name}", err)
        elif f.default is _MISSING and f.default_factory is _MISSING:
            raise err(f"{path}.{f.name}: required key is missing")
    return cls(**kwargs)


def build(raw: dict, sections: dict[str, type], err: type[Exception], dataset_cls: type,
          data_cls: type, method_cls: type, pruning_cls: type, config_cls: type) -> Any:
    """The whole Config; ``data`` and ``pruning`` hold lists of entries, built here."""
    built = {}
    for name, cls in sections.items():
        if name == "data":
            built[name] = _build_data(raw.get(name), err, dataset_cls, data_cls)
        elif name == "pruning":
            built[name] = _build_pruning(raw.get(name), err, method_cls, pruning_cls)
        else:
            built[name] = build_section(cls, raw.get(name), name, err)
    return config_cls(**built)


def _build_data(raw: Any, err: type[Exception], dataset_cls: type, data_cls: type) -> Any:
    if not isinstance(raw, dict):
        raise err(f"data: expected a mapping with 'datasets', got {raw!r}")
    extra = sorted(set(raw) - {"datasets"})
    if extra:
        raise err(f"data.{extra[0]}: unknown key (valid: datasets)")
    entries = raw.get("datasets")
    if not isinstance(entries, list) or not entries:
        raise err("data.datasets: expected a non-empty list of dataset entries")
    datasets = []
    for i, entry in enumerate(entries):
        path = f"data.datasets[{i}]"
        if isinstance(entry, dict) and isinstance(entry.get("skew"), dict):
            # YAML gives int label keys; keep them as strings ("*" = every other label)
            entry = {**entry, "skew": {str(k): v for k, v in entry["skew"].items()}}
        datasets.append(build_section(dataset_cls, entry, path, err))
    return data_cls(tuple(datasets))


def _build_pruning(raw: Any, err: type[Exception], method_cls: type, pruning_cls: type) -> Any:
    raw = dict(raw or {})
    methods_raw = raw.pop("methods", [])
    base = build_section(pruning_cls, raw, "pruning", err)
    if not isinstance(methods_raw, list):
        raise err(f"pruning.methods: expected a list, got {methods_raw!r}")
    methods = []
    for i, entry in enumerate(methods_raw):
        path = f"pruning.methods[{i}]"
        if isinstance(entry, str):
            entry = {"name": entry}  # `- random` is shorthand for `- {name: random}`
        if not isinstance(entry, dict):
            raise err(f"{path}: expected a mapping with 'name', got {entry!r}")
        entry = dict(entry)
        name = entry.pop("name", None)
        if not isinstance(name, str):
            raise err(f"{path}.name: required string key is missing")
        label = entry.pop("label", name)
        if not isinstance(label, str) or not label:
            raise err(f"{path}.label: expected a non-empty string, got {label!r}")
        per_dataset = entry.pop("per_dataset", None) or {}
        if not isinstance(per_dataset, dict) or not all(
                isinstance(v, dict) for v in per_dataset.values()):
            raise err(f"{path}.per_dataset: expected {{dataset name: {{param: value}}}}, "
                      f"got {per_dataset!r}")
        methods.append(method_cls(name=name, label=label, params=entry,
                                  per_dataset={str(k): v for k, v in per_dataset.items()}))
    return dataclasses.replace(base, methods=tuple(methods))


def _positive(value: float, path: str, err: type[Exception], allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        want = "non-negative" if allow_zero else "positive"
        raise err(f"{path}: must be {want}, got {value}")


def _fraction(value: float, path: str, err: type[Exception]) -> None:
    if not 0.0 <= value < 1.0:
        raise err(f"{path}: must be in [0, 1), got {value}")


def _choice(value: Any, allowed: tuple, path: str, err: type[Exception]) -> None:
    if value not in allowed:
        raise err(f"{path}: {value!r} is not one of {', '.join(map(str, allowed))}")


def check_values(cfg: Any, err: type[Exception]) -> None:
    """Value checks that need no registry: ranges, uniqueness, enumerations."""
    exp = cfg.experiment
    if not exp.name or "/" in exp.name:
        raise err(f"experiment.name: must be a non-empty name without '/', got {exp.name!r}")
    if not exp.seeds:
        raise err("experiment.seeds: needs at least one seed")
    if len(set(exp.seeds)) != len(exp.seeds):
        raise err(f"experiment.seeds: duplicate seeds in {list(exp.seeds)}")
    names = set()
    for i, ds in enumerate(cfg.data.datasets):
        p = f"data.datasets[{i}]"
        if ds.name in names:
            raise err(f"{p}.name: duplicate dataset name {ds.name!r}")
        names.add(ds.name)
        _positive(ds.resolution, f"{p}.resolution", err)
        if ds.limit is not None:
            _positive(ds.limit, f"{p}.limit", err)
        for label, frac in (ds.skew or {}).items():
            if label != "*" and not label.lstrip("-").isdigit():
                raise err(f"{p}.skew.{label}: keys are integer labels or '*'")
            if not 0.0 <= frac <= 1.0:
                raise err(f"{p}.skew.{label}: keep fraction must be in [0, 1], got {frac}")
    pr = cfg.pruning
    for i, r in enumerate(pr.ratios):
        _fraction(r, f"pruning.ratios[{i}]", err)
    if len(set(pr.ratios)) != len(pr.ratios):
        raise err(f"pruning.ratios: duplicate ratios in {list(pr.ratios)}")
    labels = set()
    for i, m in enumerate(pr.methods):
        if m.label == "full":
            raise err(f"pruning.methods[{i}].label: 'full' is reserved for the baseline")
        if m.label in labels:
            raise err(f"pruning.methods[{i}].label: duplicate label {m.label!r} "
                      "(give each entry of the same method its own label)")
        labels.add(m.label)
        for ds_name in m.per_dataset:
            if ds_name not in names:
                raise err(f"pruning.methods[{i}].per_dataset.{ds_name}: no dataset of that "
                          f"name (datasets: {', '.join(sorted(names))})")
    if pr.methods and not pr.ratios:
        raise err("pruning.ratios: needs at least one ratio when methods are listed")
    if not pr.methods and not pr.baseline:
        raise err("pruning: no methods and baseline: false leaves no trial to run")
    positives = {
        "autoencoder": ("batch_size", "lr"), "embed": ("batch_size",),
        "proxy": ("steps", "batch_size", "lr", "log_points", "grad_checkpoints", "draws",
                  "chunk"),
        "train": ("steps", "batch_size", "lr", "checkpoint_every", "log_every"),
        "sample": ("num_samples", "steps", "batch_size"),
        "eval": ("num_real", "prdc_k"),
        "resources": ("num_workers", "actor_pool_size"),
    }
    for section, keys in positives.items():
        for key in keys:
            _positive(getattr(getattr(cfg, section), key), f"{section}.{key}", err)
    ae = cfg.autoencoder
    _positive(ae.train_steps, "autoencoder.train_steps", err, allow_zero=ae.checkpoint is not None)
    _positive(cfg.train.weight_decay, "train.weight_decay", err, allow_zero=True)
    _fraction(cfg.train.ema_decay, "train.ema_decay", err)
    _fraction(cfg.model.class_dropout, "model.class_dropout", err)
    _choice(cfg.train.precision, ("fp32", "bf16", "fp16"), "train.precision", err)
    _choice(cfg.sample.method, ("euler", "heun"), "sample.method", err)
    _positive(cfg.sample.cfg_scale, "sample.cfg_scale", err, allow_zero=True)
    res = cfg.resources
    _positive(res.gpus_per_actor, "resources.gpus_per_actor", err, allow_zero=True)
    _positive(res.max_failures, "resources.max_failures", err, allow_zero=True)
    if isinstance(res.cpus_per_worker, str):
        _choice(res.cpus_per_worker, ("auto",), "resources.cpus_per_worker", err)
    else:
        _positive(res.cpus_per_worker, "resources.cpus_per_worker", err)
    if isinstance(res.max_concurrent_trials, str):
        _choice(res.max_concurrent_trials, ("auto",), "resources.max_concurrent_trials", err)
    else:
        _positive(res.max_concurrent_trials, "resources.max_concurrent_trials", err)
    if not cfg.embed.embedders:
        raise err("embed.embedders: needs at least one embedder")
    if not cfg.eval.metrics:
        raise err("eval.metrics: needs at least one metric")


_SEGMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)((?:\[-?\d+\])*)$")


def apply_override(raw: dict, override: str, err: type[Exception]) -> None:
    """Apply one ``a.b[0].c=value`` override to the raw config dict in place."""
    if "=" not in override:
        raise err(f"--set {override}: expected KEY=VALUE")
    key, _, text = override.partition("=")
    key = key.strip()
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise err(f"--set {key}: value is not valid YAML: {text!r}") from None
    steps: list[str | int] = []
    for seg in key.split("."):
        m = _SEGMENT.match(seg)
        if not m:
            raise err(f"--set {key}: bad key segment {seg!r}")
        steps.append(m.group(1))
        steps.extend(int(i) for i in re.findall(r"\[(-?\d+)\]", m.group(2)))
    node: Any = raw
    walked = ""
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        walked += f"[{step}]" if isinstance(step, int) else (f".{step}" if walked else step)
        if isinstance(step, int):
            if not isinstance(node, list):
                raise err(f"--set {key}: {walked} is not a list")
            if not -len(node) <= step < len(node):
                raise err(f"--set {key}: index out of range ({len(node)} entries)")
        elif not isinstance(node, dict):
            raise err(f"--set {key}: {walked.rsplit('.', 1)[0]} is not a mapping")
        if last:
            node[step] = value
        else:
            if isinstance(step, str) and node.get(step) is None:
                node[step] = [] if isinstance(steps[i + 1], int) else {}
            node = node[step]


def read_yaml(p: Path, err: type[Exception], chain: tuple[Path, ...] = ()) -> Any:
    """Parse ``p``; a top-level ``extends: base.yaml`` (relative to ``p``) is loaded first
    and ``p`` merged over it: mappings merge key by key, lists and scalars replace."""
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise err(f"{p}: invalid YAML{at}: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict) or "extends" not in raw:
        return raw
    base = raw.pop("extends")
    if not isinstance(base, str) or not base:
        raise err(f"{p}: extends: expected the path of a YAML file, got {base!r}")
    base_path = (p.parent / base).resolve()
    if base_path in chain or base_path == p.resolve():
        raise err(f"{p}: extends: cycle through {base_path}")
    if not base_path.is_file():
        raise err(f"{p}: extends: file not found: {base_path}")
    return _merge(read_yaml(base_path, err, chain + (p.resolve(),)), raw)


def _merge(base: Any, over: Any) -> Any:
    """``over`` merged onto ``base``: dicts recursively, anything else replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    return over
