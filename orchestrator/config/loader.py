"""Read a config: YAML (with ``extends``), ``--set`` overrides, typed dataclasses, resolved paths.

``load_config(path, overrides)`` reads the YAML with ``yaml.safe_load`` (following a
top-level ``extends: base.yaml``), applies ``--set a.b[0].c=value`` overrides (values
are YAML-typed), builds the dataclasses of :mod:`orchestrator.config.schema` (unknown
keys, missing keys and types checked here), resolves defaults (absolute output paths,
MLflow URI, cache and Ray storage) and runs :mod:`orchestrator.config.checks`. Every
problem is a :class:`ConfigError` whose message starts with the key path, e.g.
``pruning.methods[2].k: k=50 exceeds the 40 images of dataset 'fmnist'``.

Relative paths (``experiment.output_dir``, ``data.datasets[i].path``) are resolved
against the directory the CLI was started in (``base_dir``). Under ``ray job
submit`` that directory is the job's temporary working dir, so cluster configs
should use absolute paths or ``s3://`` / ``gs://`` URIs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Union

import yaml

from orchestrator.config import checks
from orchestrator.config.schema import (SECTIONS, Config, DataConfig, DatasetConfig, EvalConfig,
                                        MethodConfig, MlflowConfig, PruningConfig, StorageConfig)
from orchestrator.errors import ConfigError
from orchestrator.storage.fsutil import is_remote

_MISSING = dataclasses.MISSING


# scalar annotation -> (accepts a YAML value, what the message says is expected);
# bools are not ints here, ints are accepted for floats
_SCALARS: dict[type, tuple[Any, str]] = {
    bool: (lambda v: isinstance(v, bool), "true/false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    str: (lambda v: isinstance(v, str), "a string"),
}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        alts = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(alts) < len(typing.get_args(tp)):
            return None
        if len(alts) == 1:  # Optional[X]: X's own message names the inner key
            return _coerce(value, alts[0], path)
        errors = []
        for alt in typing.get_args(tp):
            try:
                return _coerce(value, alt, path)
            except ConfigError as e:
                errors.append(str(e))
        names = " or ".join(_type_name(a) for a in typing.get_args(tp))
        raise ConfigError(f"{path}: expected {names}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{path}: expected null, got {value!r}")
    if tp in _SCALARS:
        accepts, expected = _SCALARS[tp]
        if accepts(value):
            return float(value) if tp is float else value
        raise ConfigError(f"{path}: expected {expected}, got {value!r}")
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a scalar where a list is expected: `seeds: 0`
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return tuple(_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):  # a nested section, e.g. eval.classifier
        return build_section(tp, value, path)
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return {str(k): _coerce(v, val_tp, f"{path}.{k}") for k, v in value.items()}
    raise TypeError(f"unsupported annotation {tp!r} at {path}")  # a bug here, not the user's


def build_section(cls: type, raw: Any, path: str) -> Any:
    """One dataclass from one mapping: unknown keys, missing keys and types checked."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            raise ConfigError(f"{path}.{key}: unknown key (valid: {', '.join(names)})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in raw:
            kwargs[f.name] = _coerce(raw[f.name], hints[f.name], f"{path}.{f.name}")
        elif f.default is _MISSING and f.default_factory is _MISSING:
            raise ConfigError(f"{path}.{f.name}: required key is missing")
    return cls(**kwargs)


def build(raw: dict) -> Config:
    """The whole Config; ``data`` and ``pruning`` hold lists of entries, built here."""
    built = {}
    for name, cls in SECTIONS.items():
        if name == "data":
            built[name] = _build_data(raw.get(name))
        elif name == "pruning":
            built[name] = _build_pruning(raw.get(name))
        elif name == "eval":
            built[name] = _build_eval(raw.get(name))
        else:
            built[name] = build_section(cls, raw.get(name), name)
    return Config(**built)


def _build_data(raw: Any) -> DataConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"data: expected a mapping with 'datasets', got {raw!r}")
    extra = sorted(set(raw) - {"datasets", "max_skipped"})
    if extra:
        raise ConfigError(f"data.{extra[0]}: unknown key (valid: datasets, max_skipped)")
    max_skipped = _coerce(raw.get("max_skipped", 0.01), float, "data.max_skipped")
    entries = raw.get("datasets")
    if not isinstance(entries, list) or not entries:
        raise ConfigError("data.datasets: expected a non-empty list of dataset entries")
    datasets = []
    for i, entry in enumerate(entries):
        path = f"data.datasets[{i}]"
        if isinstance(entry, dict) and isinstance(entry.get("skew"), dict):
            # YAML gives int label keys; keep them as strings ("*" = every other label)
            entry = {**entry, "skew": {str(k): v for k, v in entry["skew"].items()}}
        datasets.append(build_section(DatasetConfig, entry, path))
    return DataConfig(tuple(datasets), max_skipped)


def _build_eval(raw: Any) -> EvalConfig:
    """The eval section; ``primary`` defaults to the first of ``embedders``."""
    if isinstance(raw, dict) and "embedder" in raw:
        raise ConfigError("eval.embedder: replaced by eval.embedders (a list of spaces) and "
                          f"eval.primary; write embedders: [{raw['embedder']}], primary: "
                          f"{raw['embedder']}")
    ev = build_section(EvalConfig, raw, "eval")
    if ev.primary is None and ev.embedders:
        ev = dataclasses.replace(ev, primary=ev.embedders[0])
    return ev


def _build_pruning(raw: Any) -> PruningConfig:
    raw = dict(raw or {})
    methods_raw = raw.pop("methods", [])
    base = build_section(PruningConfig, raw, "pruning")
    if not isinstance(methods_raw, list):
        raise ConfigError(f"pruning.methods: expected a list, got {methods_raw!r}")
    methods = []
    for i, entry in enumerate(methods_raw):
        path = f"pruning.methods[{i}]"
        if isinstance(entry, str):
            entry = {"name": entry}  # `- random` is shorthand for `- {name: random}`
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: expected a mapping with 'name', got {entry!r}")
        entry = dict(entry)
        name = entry.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError(f"{path}.name: required string key is missing")
        label = entry.pop("label", name)
        if not isinstance(label, str) or not label:
            raise ConfigError(f"{path}.label: expected a non-empty string, got {label!r}")
        per_dataset = entry.pop("per_dataset", None) or {}
        if not isinstance(per_dataset, dict) or not all(
                isinstance(v, dict) for v in per_dataset.values()):
            raise ConfigError(f"{path}.per_dataset: expected {{dataset name: {{param: value}}}}, "
                      f"got {per_dataset!r}")
        methods.append(MethodConfig(name=name, label=label, params=entry,
                                  per_dataset={str(k): v for k, v in per_dataset.items()}))
    return dataclasses.replace(base, methods=tuple(methods))


_SEGMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)((?:\[-?\d+\])*)$")


def apply_override(raw: dict, override: str) -> None:
    """Apply one ``a.b[0].c=value`` override to the raw config dict in place."""
    if "=" not in override:
        raise ConfigError(f"--set {override}: expected KEY=VALUE")
    key, _, text = override.partition("=")
    key = key.strip()
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"--set {key}: value is not valid YAML: {text!r}") from None
    steps: list[str | int] = []
    for seg in key.split("."):
        m = _SEGMENT.match(seg)
        if not m:
            raise ConfigError(f"--set {key}: bad key segment {seg!r}")
        steps.append(m.group(1))
        steps.extend(int(i) for i in re.findall(r"\[(-?\d+)\]", m.group(2)))
    node: Any = raw
    walked = ""
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        walked += f"[{step}]" if isinstance(step, int) else (f".{step}" if walked else step)
        if isinstance(step, int):
            if not isinstance(node, list):
                raise ConfigError(f"--set {key}: {walked} is not a list")
            if not -len(node) <= step < len(node):
                raise ConfigError(f"--set {key}: index out of range ({len(node)} entries)")
        elif not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {walked.rsplit('.', 1)[0]} is not a mapping")
        if last:
            node[step] = value
        else:
            if isinstance(step, str) and node.get(step) is None:
                node[step] = [] if isinstance(steps[i + 1], int) else {}
            node = node[step]


def read_yaml(p: Path, chain: tuple[Path, ...] = ()) -> Any:
    """Parse ``p``; a top-level ``extends: base.yaml`` (relative to ``p``) is loaded first
    and ``p`` merged over it: mappings merge key by key, lists and scalars replace."""
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not a UTF-8 text file (byte {e.object[e.start]:#04x} at "
                          f"offset {e.start}); a config must be YAML text") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"{p}: invalid YAML{at}: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict) or "extends" not in raw:
        return raw
    base = raw.pop("extends")
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{p}: extends: expected the path of a YAML file, got {base!r}")
    base_path = (p.parent / base).resolve()
    if base_path in chain or base_path == p.resolve():
        raise ConfigError(f"{p}: extends: cycle through {base_path}")
    if not base_path.is_file():
        raise ConfigError(f"{p}: extends: file not found: {base_path}")
    return _merge(read_yaml(base_path, chain + (p.resolve(),)), raw)


def _merge(base: Any, over: Any) -> Any:
    """``over`` merged onto ``base``: dicts recursively, anything else replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    return over


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
    if p.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a YAML config file")
    if not p.is_file():
        raise ConfigError(f"config file not found: {path}")
    raw = read_yaml(p)
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
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
        apply_override(raw, ov)
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section (valid: {', '.join(SECTIONS)})")
    for req in ("experiment", "data"):
        if req not in raw:
            raise ConfigError(f"{req}: required section is missing")
    cfg = build(raw)
    cfg = _resolve(cfg, Path(base_dir) if base_dir is not None else Path.cwd())
    checks.check_values(cfg)
    if check:
        checks.check_registries_and_data(cfg)
    return cfg


def _abs(path: str, base: Path) -> str:
    """Absolute local path (relative to base) or the remote URI unchanged."""
    if is_remote(path):
        return path
    if path.startswith("file://"):
        path = path[len("file://"):]
    p = Path(path).expanduser()
    return str((p if p.is_absolute() else base / p).resolve())


def _resolve(cfg: Config, base: Path) -> Config:
    """Fill path defaults: absolute output dir, MLflow store, cache and Ray storage."""
    out = _abs(cfg.experiment.output_dir, base)
    remote = is_remote(out)
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
        data=dataclasses.replace(cfg.data, datasets=datasets),
        mlflow=MlflowConfig(
            tracking_uri=tracking,
            experiment_name=cfg.mlflow.experiment_name or cfg.experiment.name,
            artifact_location=_abs(cfg.mlflow.artifact_location or f"{out}/mlartifacts", base)),
        storage=StorageConfig(
            cache_dir=_abs(cfg.storage.cache_dir or f"{out}/cache", base),
            ray_storage=_abs(cfg.storage.ray_storage or f"{out}/ray_results", base)),
    )


def dump_yaml(cfg: Config) -> str:
    """The resolved config as YAML (what ``--dry-run`` prints and runs log)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
