"""docs/configuration.md is generated from the config schema and the registries
(orchestrator/config/reference.py): it is up to date, every key, section, pruning method,
parameter, source, embedder and metric has a description, and the checks catch a planted
gap."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest

from conftest import REPO
from orchestrator.config import fields, reference
from orchestrator.config.schema import SECTIONS

DOC = REPO / "docs" / "configuration.md"


def test_committed_page_equals_the_generator():
    assert DOC.read_text() == reference.generate(), (
        f"docs/configuration.md is out of date: run `{reference.COMMAND}`")


def test_everything_is_documented_and_nothing_stale():
    assert reference.undocumented() == []
    assert reference.stale() == []


def test_every_schema_key_is_on_the_page():
    text = DOC.read_text()
    paths = reference.schema_paths()
    assert len(paths) > 90 and "data.datasets[].image_column" in paths
    assert "eval.classifier.test_share" in paths and "pruning.methods[].per_dataset" in paths
    for path in paths:
        assert f"| `{path}` |" in text, path
    for section in SECTIONS:
        assert f"## `{section}`" in text


def test_every_registry_entry_is_on_the_page():
    from eval import METRICS
    from models import EMBEDDERS
    from orchestrator.data.sources import SOURCES
    from pruning import PRUNERS

    text = DOC.read_text()
    for name, cls in PRUNERS.items():
        assert f"### `{name}`" in text
        for param in cls.PARAMS:
            assert f"| `{param}` |" in text
    for name in [*SOURCES, *EMBEDDERS, *METRICS]:
        assert f"| `{name}` |" in text, name


def test_an_undocumented_field_is_caught(monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class Planted:
        documented: int = 1
        forgotten: str = "x"

    monkeypatch.setitem(SECTIONS, "planted", Planted)
    monkeypatch.setitem(fields.SECTIONS, "planted", "A planted section.")
    monkeypatch.setitem(fields.FIELDS, "planted.documented", "Has a description.")
    assert reference.undocumented() == ["config key planted.forgotten"]
    monkeypatch.setitem(fields.FIELDS, "planted.forgotten", "  ")   # blank is undocumented
    assert reference.undocumented() == ["config key planted.forgotten"]
    monkeypatch.setitem(fields.FIELDS, "planted.gone", "A key the schema does not have.")
    assert reference.stale() == ["planted.gone"]


def test_an_undocumented_pruner_param_is_caught(monkeypatch):
    import pruning
    from pruning.base import Param, Pruner

    class Planted(Pruner):
        """A planted method.

        Params:
            alpha: a described parameter, whose text
                continues here.
        """

        name: ClassVar[str] = "planted"
        PARAMS: ClassVar[dict[str, Param]] = {"alpha": Param(1, (int,)),
                                              "beta": Param(2, (int,))}

    assert reference.param_docs(Planted) == {
        "alpha": "a described parameter, whose text continues here."}
    monkeypatch.setitem(pruning.PRUNERS, "planted", Planted)
    assert reference.undocumented() == ["parameter planted.beta"]


@pytest.mark.parametrize("tp, name", [(int, "int"), (str | None, "str or null"),
                                      (tuple[float, ...], "list of float"),
                                      (dict[str, float] | None, "mapping str -> float or null"),
                                      (int | str, "int or str")])
def test_type_names(tp, name):
    assert reference.type_name(tp) == name
