"""Config checks against the registries (models, pruning, eval, sources) and the disk.

The registries live in packages that may import torch; they are imported here,
lazily, so a plain ``import orchestrator.config`` stays cheap. A registry whose
package is not importable yet (packages are built independently) is skipped with
a warning instead of failing every config: the check comes back by itself once
the package exports its registry.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from typing import Any

from orchestrator.config import Config, ConfigError

log = logging.getLogger(__name__)

# (module, registry attribute) for each name a config can hold
REGISTRIES = {
    "models": ("models", "MODELS"),
    "vqvae": ("models", "VQVAE_PRESETS"),
    "embedders": ("models", "EMBEDDERS"),
    "pruners": ("pruning", "PRUNERS"),
    "metrics": ("eval", "METRICS"),
    "sources": ("orchestrator.sources", "SOURCES"),
}
_warned: set[str] = set()


def registry(kind: str) -> dict[str, Any] | None:
    """The registry dict for ``kind`` (a REGISTRIES key), or None if not built yet."""
    module, attr = REGISTRIES[kind]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or not module.startswith(e.name):
            raise  # the package exists but one of its own imports is broken
        mod = None
    reg = getattr(mod, attr, None) if mod is not None else None
    if reg is None and kind not in _warned:
        _warned.add(kind)
        log.warning("%s.%s is not available yet: %s names are not checked", module, attr, kind)
    return reg


def _check_name(value: str, kind: str, path: str) -> None:
    reg = registry(kind)
    if reg is not None and value not in reg:
        raise ConfigError(f"{path}: unknown name {value!r} (valid: {', '.join(sorted(reg))})")


def _is_remote(path: str) -> bool:
    return "://" in path


def _check_file(path: str | None, key: str) -> None:
    if path and not _is_remote(path) and not os.path.exists(path):
        raise ConfigError(f"{key}: file not found: {path}")


def _param_key(message: str, params: dict[str, Any]) -> str | None:
    """The param a pruner's error message is about (it names it), if any."""
    for name in sorted(params, key=len, reverse=True):
        if re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", message):
            return name
    return None


def check_registries_and_data(cfg: Config) -> None:
    """Every registry name, data path, weight file and cluster count in ``cfg``."""
    from orchestrator import sources

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
    for name, path in cfg.embed.weights.items():
        _check_name(name, "embedders", f"embed.weights.{name}")
        _check_file(path, f"embed.weights.{name}")
    _check_name(cfg.eval.embedder, "embedders", "eval.embedder")
    if cfg.eval.embedder not in cfg.embed.embedders:
        raise ConfigError(f"eval.embedder: {cfg.eval.embedder!r} must also be listed in "
                          f"embed.embedders {list(cfg.embed.embedders)}")
    for i, name in enumerate(cfg.eval.metrics):
        _check_name(name, "metrics", f"eval.metrics[{i}]")
    for i, m in enumerate(cfg.pruning.methods):
        _check_method(cfg, i, m, counts)


def _check_method(cfg: Config, i: int, m: Any, counts: dict[str, int | None]) -> None:
    """Name, params (per dataset), embedder and cluster count of one method entry."""
    p = f"pruning.methods[{i}]"
    _check_name(m.name, "pruners", f"{p}.name")
    pruners = registry("pruners")
    for ds_name, n in counts.items():
        raw = m.params_for(ds_name)
        params, emb = dict(raw), raw.get("embedder")
        if pruners is not None:
            try:
                pruner = pruners[m.name](**raw)  # the pruner validates its own params
            except (TypeError, ValueError) as e:
                key = _param_key(str(e), raw)
                if key in m.per_dataset.get(ds_name, {}):
                    key = f"per_dataset.{ds_name}.{key}"
                raise ConfigError(f"{p}{'.' + key if key else ''}: {e}") from None
            # defaults filled in by the pruner (clustering's embedder and k) count too
            emb = getattr(pruner, "embedder", emb)
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
