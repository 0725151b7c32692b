"""Helpers of the pipeline end-to-end tests (smoke.yaml on the local Fashion-MNIST).

The encode / embed / proxy artifacts of smoke.yaml are shared by the end-to-end
tests of one pytest session through one cache directory: whichever test runs first
builds them, the others change only trial settings (``train.steps``) so their
trials are new while the upstream stages come from the cache.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "experiments" / "smoke.yaml"
FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
SMOKE_METHODS = ("full", "random", "el2n", "clustering_balanced")

_shared: dict[str, Path] = {}

needs_fmnist = pytest.mark.skipif(
    not FMNIST.is_file(), reason=f"Fashion-MNIST not installed ({FMNIST}; apt-get install "
                                 "dataset-fashion-mnist)")


@contextlib.contextmanager
def patched_environ(env: dict[str, str]) -> Iterator[None]:
    """Set ``env`` in ``os.environ`` for the block; restore every key afterwards."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's shared smoke cache directory."""
    if "cache" not in _shared:
        _shared["cache"] = tmp_path_factory.mktemp("smoke-cache")
    return _shared["cache"]


def smoke_overrides(out: Path, cache: Path, *extra: str) -> list[str]:
    return [f"experiment.output_dir={out}", f"storage.cache_dir={cache}", *extra]


def child_env(local_ray: bool = True, **extra: str) -> dict[str, str]:
    """Environment of a driver subprocess: repo importable, offline.

    ``local_ray``: ``RAY_ADDRESS=local`` makes the driver start its own Ray instead of
    joining another Ray cluster running on the machine (other test sessions' heads).
    """
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    if local_ray:
        env["RAY_ADDRESS"] = "local"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("RAY_AUTH_MODE", "token")  # same mode as in-process ray.init() (DESIGN.md)
    env.update(extra)
    return env


def cli(args: list[str], timeout: float, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """Run ``python -m orchestrator.run ARGS`` to completion."""
    return subprocess.run([sys.executable, "-m", "orchestrator.run", *args], cwd=REPO,
                          env=env or child_env(), capture_output=True, text=True,
                          timeout=timeout, **kw)


def trial_records(cache: Path, train_steps: int | None = None) -> dict[str, dict]:
    """Result records in the cache by trial key (optionally one train.steps only)."""
    out = {}
    for path in glob.glob(str(cache / "trial" / "*.json")):
        if not os.path.exists(path + ".sha256"):
            continue
        rec = json.loads(Path(path).read_text())
        if train_steps is None or rec["params"]["train_steps"] == train_steps:
            out[rec["key"]] = rec
    return out


def table_rows(markdown: str) -> list[list[str]]:
    """Body rows of the printed Markdown comparison table."""
    lines = [ln for ln in markdown.splitlines() if ln.startswith("| ")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[1:]]


def assert_complete_table(text: str, methods=SMOKE_METHODS, n_rows: int = 4) -> None:
    """The printed table has every method row with finite numbers."""
    rows = [r for r in table_rows(text) if r and r[0] == "fmnist"]
    assert len(rows) == n_rows, text[-3000:]
    assert [r[1] for r in rows] == list(methods)
    for r in rows:
        for cell in r[3:-1]:
            assert cell and cell != "nan", r
            float(cell.split(" ± ")[0])
