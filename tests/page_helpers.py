"""Generated doc pages: rerun the command a committed page names in its first lines."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[1]


def regenerate(page: str, module: str, main: Callable[[list[str]], int], tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """Run ``python -m MODULE ...`` as the committed ``page`` (a path relative to the
    repository) says it was made, writing to ``tmp_path``; returns (committed text, new
    text with its own path written as ``page``), for the caller to compare."""
    committed = (REPO / page).read_text()
    command = committed.split(f"do not edit by hand: `python -m {module} ")[1]
    argv = command.split("`")[0].split()
    out = argv.index("--out") + 1
    assert argv[out] == page
    argv[out] = str(tmp_path / Path(page).name)
    monkeypatch.chdir(REPO)   # the page names its inputs as given, relative to the repository
    assert main(argv) == 0
    return committed, Path(argv[out]).read_text().replace(argv[out], page)
