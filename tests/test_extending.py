"""docs/extending.md's worked examples run: each section's Python blocks, in order, in one
namespace, in a temporary folder (the new file, then the lines that register and try it).
The registries are restored afterwards; the new pruner's docstring passes the config
reference's documentation check while registered."""

from __future__ import annotations

import re

import pytest

from conftest import REPO

DOC = REPO / "docs" / "extending.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
SECTIONS = ("A pruning method", "A data source", "A metric", "An embedder")


def blocks(section: str, lang: str = "python") -> list[str]:
    """The ``lang`` fenced blocks under the ``## section`` heading, in order."""
    text = DOC.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start:end if end != -1 else len(text)]
    return [code for kind, code in FENCE.findall(body) if kind == lang]


@pytest.fixture
def registries():
    """Every registry dict, restored after the test."""
    from eval import METRICS
    from models import EMBEDDERS
    from orchestrator.data.sources import SOURCES
    from pruning import PRUNERS

    regs = [PRUNERS, SOURCES, METRICS, EMBEDDERS]
    saved = [dict(r) for r in regs]
    yield
    for reg, old in zip(regs, saved):
        reg.clear()
        reg.update(old)


def test_every_section_has_a_file_a_registry_entry_and_a_run():
    text = DOC.read_text()
    for section in SECTIONS:
        assert f"\n## {section}\n" in text
        code = blocks(section)
        assert len(code) == 2, section            # the new file, then the try-it block
        assert code[0].startswith('"""'), section  # a module: docstring first
        (diff,) = blocks(section, "diff")
        added = [line for line in diff.splitlines() if line.startswith("+")]
        assert len(added) == 2, section            # one import, one registry entry


@pytest.mark.parametrize("section", SECTIONS)
def test_worked_example_runs(section, registries, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"extending_example_{SECTIONS.index(section)}"}
    for code in blocks(section):
        exec(compile(code, f"{DOC.name}:{section}", "exec"), namespace)  # noqa: S102


def test_example_pruner_is_documented_for_the_reference(registries, tmp_path, monkeypatch):
    """With the example registered, the generated reference has no gap."""
    from orchestrator.config import reference

    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "extending_example_reference"}
    for code in blocks("A pruning method") + blocks("A metric") + blocks("An embedder"):
        exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102
    assert reference.undocumented() == []
    page = reference.generate()
    assert "### `mean_distance`" in page and "| `mean_gap` |" in page
    assert "| `color_hist` | `hist` | 24 |" in page


def test_example_files_would_fit_the_layering():
    """The examples' libraries import nothing the architecture forbids them."""
    for section, package in (("A pruning method", "pruning"), ("A metric", "eval"),
                             ("An embedder", "models")):
        code = blocks(section)[0]
        for banned in ("ray", "mlflow", "orchestrator"):
            assert not re.search(rf"^(from|import) {banned}\b", code, re.M), (package, banned)
