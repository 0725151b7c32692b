"""Shared fixtures: a tiny synthetic Fashion-MNIST on disk and a minimal config.

Nothing here touches the network or a GPU; everything is written under tmp_path.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from tiers import assign_tiers, guard_unit_test  # noqa: F401  (guard_unit_test: a fixture)

pytest_plugins = ["pytester"]   # tests/test_tiers.py runs small suites in a temp dir

REPO = Path(__file__).resolve().parents[1]


@pytest.hookimpl(tryfirst=True)   # before -m selects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test in exactly one tier (tests/tiers.py); unmarked tests are ``unit``."""
    assign_tiers(items)


@pytest.fixture(autouse=True)
def _tier_guard(guard_unit_test: None) -> None:
    """A unit test that starts Ray or a Python child process fails (tests/tiers.py)."""


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """Write ``array`` (uint8) in the IDX format that (Fashion-)MNIST uses."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def make_fmnist(root: Path, per_class: int = 20, test_per_class: int = 5,
                seed: int = 0) -> Path:
    """A fake Fashion-MNIST with ``per_class`` 28x28 images of each of 10 labels."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", per_class), ("t10k", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), n))
        images = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def expected_shared_noise(k: int, seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """pruning.stats' shared noise (``noise="shared"``) recomputed from its documented
    stream, SeedSequence(seed, spawn_key=(0x5EEE,)): (k, *shape) float32."""
    gen = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x5EEE,)))
    return gen.standard_normal((k, *shape), dtype=np.float32)


@pytest.fixture
def fmnist_dir(tmp_path: Path) -> Path:
    """A synthetic Fashion-MNIST directory: 200 train and 50 test images."""
    return make_fmnist(tmp_path / "fmnist")


def minimal_config(**sections: Any) -> dict[str, Any]:
    """The smallest valid config (sklearn digits, two methods); sections override."""
    cfg: dict[str, Any] = {
        "experiment": {"name": "t", "seeds": [0], "output_dir": "out"},
        "data": {"datasets": [{"name": "digits", "source": "digits", "resolution": 16,
                               "limit": 100, "conditional": True}]},
        "embed": {"embedders": ["pixels"]},
        "eval": {"embedders": ["pixels"], "metrics": ["fd"]},
        "pruning": {"ratios": [0.5], "methods": [
            {"name": "random"},
            {"name": "clustering", "embedder": "pixels", "k": 5}]},
    }
    cfg.update(sections)
    return cfg


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a config dict as YAML under tmp_path and return its path."""
    def _write(cfg: dict[str, Any], name: str = "cfg.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path
    return _write


@pytest.fixture
def one_torch_thread():
    """Run a test with one torch thread (tiny models on a shared 2-core machine)."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)

