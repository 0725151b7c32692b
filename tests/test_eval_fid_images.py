"""FID from images through the one Inception path (``models`` embedder "inception" ->
``eval.compute_fid_from_images``): clear offline errors, path loading of a TorchScript file."""

import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from cleanfid.resize import build_resizer

from eval.frechet import compute_fd, compute_fid_from_images
from models import EMBEDDERS, MissingWeightsError, build_embedder

INCEPTION_FILENAME = "inception-2015-12-05.pt"


class TinyInception(torch.nn.Module):
    """Stands in for clean-fid's file: InceptionV3W uses ``.layers`` -> (B, 2048)."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 2048)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@pytest.fixture
def no_cached_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(EMBEDDERS["inception"], "default_path", tmp_path / INCEPTION_FILENAME)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("PRUNEDIFF_OFFLINE", raising=False)
    return tmp_path / INCEPTION_FILENAME


def fid(real, fake, weights_path=None):
    return compute_fid_from_images(real, fake, build_embedder("inception", weights=weights_path))


def images(seed: int, n: int = 5, size: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def test_without_weights_fails_fast_with_where_to_put_them(no_cached_weights, tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEDIFF_OFFLINE", "1")   # download disabled
    start = time.monotonic()
    with pytest.raises(MissingWeightsError, match=INCEPTION_FILENAME) as err:
        fid(images(0), images(1))
    assert time.monotonic() - start < 5
    assert str(no_cached_weights) in str(err.value) and "config" in str(err.value)
    with pytest.raises(MissingWeightsError, match="not found at"):
        fid(images(0), images(1), weights_path="/nonexistent/inception.pt")
    assert not (tmp_path / INCEPTION_FILENAME).exists()


def test_failed_download_is_a_clear_error(no_cached_weights, monkeypatch, tmp_path):
    calls = []

    def offline(url, timeout=None):
        calls.append(timeout)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(MissingWeightsError, match="could not download"):
        fid(images(0), images(1))  # download is the default
    assert len(calls) == 1 and calls[0] is not None  # one bounded attempt, no retries
    assert not any(p.name.startswith(INCEPTION_FILENAME) for p in tmp_path.iterdir())


@pytest.mark.parametrize("name", ["inception-2015-12-05.pt", "my_inception.pt"])
def test_weights_path_loads_torchscript_and_matches_direct_features(tmp_path, name):
    torch.manual_seed(0)
    path = tmp_path / name
    torch.jit.save(torch.jit.script(TinyInception()), str(path))
    real, fake = images(2), images(3, n=6, size=32)
    got = fid(real, fake, weights_path=str(path))

    # Independent pipeline: clean-fid's resize, its [0,255] -> [-1,1] scaling, the module.
    module = torch.jit.load(str(path))
    resize = build_resizer("clean")

    def feats(x):
        batch = torch.from_numpy(np.stack([resize(img) for img in x])).permute(0, 3, 1, 2)
        with torch.no_grad():
            return module.layers((batch - 128) / 128).double().numpy()

    want = compute_fd(feats(real), feats(fake))["fd"]
    assert got["fid"] == pytest.approx(want, rel=1e-6)
    assert got["fid"] > 0
    assert fid(real, real, weights_path=str(path))["fid"] == pytest.approx(0, abs=1e-6)


def test_rejects_non_uint8_images(tmp_path):
    path = tmp_path / "w.pt"
    torch.jit.save(torch.jit.script(TinyInception()), str(path))
    with pytest.raises(ValueError, match="uint8"):
        fid(images(0).astype(np.float32), images(1), weights_path=str(path))
