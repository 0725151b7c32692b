"""The configuration reference, generated: ``python -m orchestrator.config.reference >
docs/configuration.md``.

Reads every section and key of :mod:`orchestrator.config.schema` (type and default from the
dataclasses, meaning from :mod:`orchestrator.config.fields`) and the registries: pruning
methods (``pruning.PRUNERS``: parameters from each class's ``PARAMS``, their meaning from the
``Params:`` block of its docstring), sources (``orchestrator.data.sources.SOURCES``),
embedders (``models.EMBEDDERS``), metrics (``eval.METRICS``) and model presets.
``tests/test_config_reference.py`` fails when something is undocumented or the committed
page differs from :func:`generate`.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from typing import Any, Iterator

import yaml

from eval import METRICS
from models import EMBEDDERS, MODELS, VQVAE_PRESETS
from orchestrator.config import fields as docs
from orchestrator.config.schema import SECTIONS
from orchestrator.data.sources import SOURCES
from pruning import PRUNERS

COMMAND = "python -m orchestrator.config.reference > docs/configuration.md"


def _flat(text: str) -> str:
    return " ".join(text.split())


def summary(obj: Any) -> str:
    """The first paragraph of ``obj``'s docstring, on one line ("" without one)."""
    doc = inspect.getdoc(obj) or ""
    return _flat(doc.split("\n\n")[0])


def type_name(tp: Any) -> str:
    """A YAML-facing name: ``list of int``, ``str or null``, ``mapping str -> float``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is tuple:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return f"mapping {type_name(args[0])} -> {type_name(args[1])}"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def yaml_value(value: Any) -> str:
    """``value`` as inline YAML (``null``, ``[0]``, ``{}``, ``0.0002``)."""
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("...").strip()


def default_text(f: dataclasses.Field, path: str = "") -> str:
    """The field's default as YAML (:data:`fields.DEFAULTS` first), or ``required``."""
    if path in docs.DEFAULTS:
        return docs.DEFAULTS[path]
    if f.default is not dataclasses.MISSING and dataclasses.is_dataclass(f.default):
        return "(below)"
    if f.default is not dataclasses.MISSING:
        return f"`{yaml_value(f.default)}`"
    if f.default_factory is not dataclasses.MISSING:   # type: ignore[misc]
        value = f.default_factory()                    # type: ignore[misc]
        return "(below)" if dataclasses.is_dataclass(value) else f"`{yaml_value(value)}`"
    return "required"


def walk(cls: type, prefix: str) -> Iterator[tuple[str, dataclasses.Field, Any, type | None]]:
    """(path, field, annotation, nested dataclass or None) of every key under ``cls``,
    depth first; a list of entries is ``path[]``, a nested section ``path``."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, path = hints[f.name], f"{prefix}.{f.name}"
        inner = None
        if typing.get_origin(tp) is tuple and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            inner, child = typing.get_args(tp)[0], path + "[]"
        elif dataclasses.is_dataclass(tp):
            inner, child = tp, path
        yield path, f, tp, inner
        if inner is not None:
            yield from walk(inner, child)


def schema_paths() -> list[str]:
    """Every key path of the schema (what :data:`fields.FIELDS` must describe)."""
    return [path for name, cls in SECTIONS.items() for path, *_ in walk(cls, name)]


def param_docs(cls: type) -> dict[str, str]:
    """``name: text`` entries of the ``Params:`` block of a pruner's docstring."""
    doc = inspect.getdoc(cls) or ""
    match = re.search(r"^Params:\n((?:[ \t]+.*\n?|\n)*)", doc, re.M)
    out: dict[str, str] = {}
    current = None
    for line in (match.group(1) if match else "").splitlines():
        entry = re.match(r"^ {4}(\w+): (.*)$", line)
        if entry:
            current = entry.group(1)
            out[current] = entry.group(2)
        elif current and line.strip():
            out[current] += " " + line.strip()
    return {k: _flat(v) for k, v in out.items()}


def undocumented() -> list[str]:
    """Everything the page would show without a description (empty when complete)."""
    missing = [f"config key {p}" for p in schema_paths() if not docs.FIELDS.get(p, "").strip()]
    missing += [f"section {s}" for s in SECTIONS if not docs.SECTIONS.get(s, "").strip()]
    for name, cls in PRUNERS.items():
        if not summary(cls):
            missing.append(f"pruning method {name}")
        described = param_docs(cls)
        missing += [f"parameter {name}.{p}" for p in cls.PARAMS if not described.get(p)]
    missing += [f"source {n}" for n, src in SOURCES.items() if not summary(type(src))]
    missing += [f"embedder {n}" for n, cls in EMBEDDERS.items() if not summary(cls)]
    missing += [f"metric {n}" for n, fn in METRICS.items() if not summary(fn)]
    return missing


def stale() -> list[str]:
    """Descriptions in :mod:`fields` of keys or sections the schema no longer has."""
    paths = set(schema_paths())
    nested = {path + ("[]" if typing.get_origin(tp) is tuple else "")
              for name, cls in SECTIONS.items() for path, _, tp, inner in walk(cls, name)
              if inner is not None}
    return sorted([p for p in [*docs.FIELDS, *docs.DEFAULTS] if p not in paths]
                  + [s for s in docs.SECTIONS if s not in set(SECTIONS) | nested])


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _section(name: str, cls: type) -> list[str]:
    out = [f"## `{name}`", "", docs.SECTIONS[name], "",
           "| key | type | default | meaning |", "|---|---|---|---|"]
    subsections = []
    for path, f, tp, inner in walk(cls, name):
        if path.count(".") > 1 or (path.count(".") == 1 and "[]" in path):
            continue      # keys of a nested section: its own table below
        out.append(f"| `{path}` | {_cell(type_name(tp))} | {_cell(default_text(f, path))} | "
                   f"{_cell(docs.FIELDS[path])} |")
        if inner is not None:
            subsections.append((path + ("[]" if typing.get_origin(tp) is tuple else ""), inner))
    for sub, inner in subsections:
        out += ["", f"### `{sub}`", "", docs.SECTIONS[sub], "",
                "| key | type | default | meaning |", "|---|---|---|---|"]
        for path, f, tp, _ in walk(inner, sub):
            out.append(f"| `{path}` | {_cell(type_name(tp))} | {_cell(default_text(f, path))} | "
                       f"{_cell(docs.FIELDS[path])} |")
    return out + [""]


def _methods() -> list[str]:
    out = ["## Pruning methods", "",
           "`pruning.methods[].name` values (`pruning.PRUNERS`). Parameters go inline in the "
           "entry; an unknown or invalid one is a config error naming it.", ""]
    for name, cls in PRUNERS.items():
        inst = cls()
        stats = ", ".join(f"`{s}`" for s in inst.needs_stats) or "none"
        out += [f"### `{name}`", "", summary(cls), "",
                f"Proxy statistics: {stats}.", ""]
        if not cls.PARAMS:
            out += ["No parameters.", ""]
            continue
        described = param_docs(cls)
        out += ["| param | type | default | allowed | meaning |", "|---|---|---|---|---|"]
        for p, spec in cls.PARAMS.items():
            types = " or ".join("null" if t is type(None) else t.__name__ for t in spec.types)
            allowed = (", ".join(f"`{c}`" for c in spec.choices) if spec.choices
                       else spec.rule or "any")
            out.append(f"| `{p}` | {types} | `{yaml_value(spec.default)}` | {_cell(allowed)} | "
                       f"{_cell(described[p])} |")
        out.append("")
    return out


def _registries() -> list[str]:
    out = ["## Sources", "", "`data.datasets[].source` values "
           "(`orchestrator.data.sources.SOURCES`).", "",
           "| source | splits | held-out reference | what |", "|---|---|---|---|"]
    for name, src in SOURCES.items():
        splits = ", ".join(f"`{s}`" for s in (getattr(src, "splits", None) or ()) if s) or "-"
        ref = (f"split `{src.reference_split}`" if src.reference_split
               else "a seeded `holdout` share")
        out.append(f"| `{name}` | {splits} | {ref} | {_cell(summary(type(src)))} |")
    out += ["", "## Embedders", "", "`embed.embedders` and `eval.embedders` values "
            "(`models.EMBEDDERS`); `short` names the metric columns (`fd_<short>`).", "",
            "| embedder | short | dim | what |", "|---|---|---|---|"]
    for name, cls in EMBEDDERS.items():
        out.append(f"| `{name}` | `{cls.short}` | {cls.dim} | {_cell(summary(cls))} |")
    out += ["", "## Metrics", "", "`eval.metrics` values (`eval.METRICS`); each column is "
            "suffixed by the space, `<key>_<short>`.", "", "| metric | what and keys |",
            "|---|---|"]
    out += [f"| `{name}` | {_cell(summary(fn))} |" for name, fn in METRICS.items()]
    out += ["", "## Model presets", "",
            "- `model.preset`, `proxy.model` (`models.MODELS`): "
            + ", ".join(f"`{m}`" for m in MODELS),
            "- `autoencoder.preset` (`models.VQVAE_PRESETS`): "
            + ", ".join(f"`{m}`" for m in VQVAE_PRESETS), ""]
    return out


HEADER = f"""# Configuration reference

<!-- generated by `{COMMAND}`; edit orchestrator/config/fields.py or the code, not this page -->

A config is one YAML file of the sections below. Unknown keys are errors, and so are
wrong types and registry names (the message names the key path and the valid names).
A top-level `extends: base.yaml` (relative to the config) loads that file first: mappings
merge key by key, lists and scalars replace. `--set KEY=VALUE` overrides any key with a
YAML value (`--set train.steps=50`, `--set 'pruning.ratios=[0.25,0.5]'`,
`--set data.datasets[0].limit=100`). `--dry-run` prints the resolved config.
Complete examples: `experiments/quickstart.yaml`, `smoke.yaml`, `skewed.yaml`,
`reproduce.yaml`, `paper.yaml`.
"""


def generate() -> str:
    """The whole page (Markdown)."""
    lines = [HEADER]
    for name, cls in SECTIONS.items():
        lines += _section(name, cls)
    lines += _methods() + _registries()
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(generate(), end="")
