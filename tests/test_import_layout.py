"""The orchestrator's import graph: no cycles (function-level imports counted), the
layering ARCHITECTURE.md promises (``training/`` and ``errors.py`` stay free of Ray and
of the rest of the orchestrator where they must), and imports at the module's top unless a
``# lazy:`` comment says why one sits in a function.

Self-contained (ast over the source files), the same rules as
``../shared/tools/import_cycles.py``: a package importing its own children is not a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "orchestrator"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PKG.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def _imports(mod: str, path: Path) -> set[str]:
    """Every absolute module name ``mod`` imports anywhere in its body (lazy ones too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for mod, path in mods.items():
        targets = set()
        for name in _imports(mod, path):
            while name and name not in mods:
                name = name.rpartition(".")[0]
            if name and name != mod and not name.startswith(mod + "."):
                targets.add(name)
        graph[mod] = targets
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    cycles.append(sorted(comp))
    return cycles


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = _graph()
    assert len(graph) > 20 and "orchestrator.config.loader" in graph
    assert find_cycles(graph) == []


@pytest.mark.parametrize("package", ["orchestrator.training", "orchestrator.errors",
                                     "orchestrator.config.schema", "orchestrator.data",
                                     "orchestrator.stages", "orchestrator.pipeline",
                                     "orchestrator.runtime.executor",
                                     "orchestrator.runtime.resources"])
def test_no_ray_in_pure_layers(package):
    """training/ runs inside any worker runtime; errors/schema are imported by everything;
    the sources, the stages and the pipeline reach Ray only through the executor
    (runtime/executor.py, which imports runtime/ray_executor.py only for a Ray run; it and
    the resource plan import no Ray), so they run on the local executor without it."""
    mods = {m: p for m, p in _modules().items() if m == package or m.startswith(package + ".")}
    assert mods
    for mod, path in mods.items():
        bad = {n for n in _imports(mod, path) if n.split(".")[0] in ("ray", "mlflow")}
        assert not bad, f"{mod} imports {sorted(bad)}"


def test_errors_and_schema_import_nothing_of_ours():
    graph = _graph()
    assert graph["orchestrator.errors"] == set()
    assert graph["orchestrator.data"] == set()                  # DatasetConfig's home
    assert graph["orchestrator.config.schema"] == {"orchestrator.data"}


# What each part of orchestrator/ may import of the others (ARCHITECTURE.md's table).
ALLOWED = {
    "errors": set(), "progress": set(),
    "config": {"errors", "storage", "data"},
    "storage": {"errors"},
    "data": {"errors", "storage"},        # never config: DatasetConfig lives in data
    "training": {"config", "storage", "errors", "progress"},
    "runtime": {"training", "storage", "errors", "progress", "config", "data", "tracking"},
    "stages": {"config", "data", "storage", "runtime", "training", "progress", "errors",
               "tracking", "version", "weights"},
    "tracking": {"config", "training", "errors", "version", "progress"},
    "version": set(),
    "compare": set(),
    "cli": {"run", "compare"},
    "until": {"config"},
    "weights": {"config", "data"},
    "pipeline": {"stages", "runtime", "config", "storage", "data", "progress", "errors", "until",
                 "tracking"},
    "sizing": {"config", "data", "errors"},
    "run": {"config", "errors", "pipeline", "sizing", "until", "weights", "version"},
    "__main__": {"run"},
}


def test_parts_import_only_what_the_architecture_allows():
    def part(mod: str) -> str | None:
        parts = mod.split(".")
        return parts[1] if len(parts) > 1 else None   # None: the package root

    for mod, targets in _graph().items():
        src = part(mod)
        if src is None:
            continue
        assert src in ALLOWED, f"{mod}: a new part of orchestrator/ needs a row in ALLOWED"
        bad = {t for t in targets if part(t) not in (None, src) and part(t) not in ALLOWED[src]}
        assert not bad, f"{mod} imports {sorted(bad)}: not allowed for {src}/ (ARCHITECTURE.md)"


def unexplained_imports(source: str) -> list[int]:
    """Lines of the function-level imports in ``source`` without a ``# lazy:`` comment on
    their (first) line or on the line just above."""
    lines = source.splitlines()
    found = set()
    for fn in ast.walk(ast.parse(source)):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found.update(n.lineno for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return [n for n in sorted(found)
            if "# lazy:" not in lines[n - 1] and not lines[n - 2].strip().startswith("# lazy:")]


def test_unexplained_imports_finds_a_planted_one():
    source = ("import os\n\n\ndef f():\n    import json\n    # lazy: measured\n    import csv\n"
              "    import io  # lazy: measured\n\n    def g():\n        from a import b\n")
    assert unexplained_imports(source) == [5, 11]


def test_function_level_imports_say_why():
    """Imports sit at the module's top unless a lazy import is measured to matter: every
    function-level import says why in a ``# lazy:`` comment (the import's cost, measured;
    Ray kept off the local executor; an import cycle), on its line or the line above."""
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        offenders += [f"{rel}:{n}" for n in unexplained_imports(path.read_text())]
    assert not offenders, ("function-level imports without a `# lazy:` reason (move them to "
                           "the module's top, or say why): " + ", ".join(offenders))
