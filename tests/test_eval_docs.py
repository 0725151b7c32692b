"""Public eval functions document every parameter (docstrings must not drift)."""

import inspect

import pytest

import eval

PUBLIC = [getattr(eval, name) for name in eval.__all__ if inspect.isfunction(getattr(eval, name))]


@pytest.mark.parametrize("fn", PUBLIC, ids=lambda f: f.__name__)
def test_docstring_names_every_parameter(fn):
    doc = inspect.getdoc(fn) or ""
    assert "Args:" in doc and "Returns:" in doc, fn.__name__
    for name in inspect.signature(fn).parameters:
        assert f"{name}:" in doc, f"{fn.__name__} does not document {name!r}"
