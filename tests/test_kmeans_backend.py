"""One faiss per install (setup.cfg extras) and the k-means backend report
(pruning/kmeans.py: kmeans_backend, kmeans_fallback_reason, logged fallbacks)."""
from __future__ import annotations

import configparser
import logging

import faiss as real_faiss
import numpy as np
import pytest

import eval.knn as knn
import pruning.kmeans as km
from conftest import REPO


def _blobs(n: int = 3000, d: int = 16, k: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 5
    return (centres[rng.integers(0, k, n)] + rng.normal(size=(n, d))).astype(np.float32)


class GpuBuild:
    """Stands in for faiss-gpu-cu12: the real CPU faiss plus the GPU entry points."""

    StandardGpuResources = object

    def __init__(self, gpus: int, gpu_fails: bool) -> None:
        self.gpus, self.gpu_fails, self.gpu_calls = gpus, gpu_fails, 0

    def __getattr__(self, name: str):
        return getattr(real_faiss, name)

    def get_num_gpus(self) -> int:
        return self.gpus

    def Kmeans(self, *args, gpu=False, **kwargs):  # noqa: N802 (faiss's name)
        if gpu:
            self.gpu_calls += 1
            if self.gpu_fails:
                raise RuntimeError("CUDA error: out of memory\nstack ...")
        return real_faiss.Kmeans(*args, gpu=False, **kwargs)


@pytest.fixture(autouse=True)
def fresh_report(monkeypatch):
    monkeypatch.setattr(km, "_LAST", {"backend": None, "reason": None})
    monkeypatch.setattr(km, "_WARNED", set())


def test_cpu_faiss_is_reported_and_logged_without_a_warning(caplog):
    caplog.set_level(logging.INFO, logger="pruning.kmeans")
    assert km.kmeans_backend() == "faiss-cpu"           # before any run: what it will try
    km.kmeans(_blobs(), 6, seed=0)
    assert km.kmeans_backend() == "faiss-cpu" and km.kmeans_fallback_reason() is None
    assert "k-means: faiss-cpu, 3000 x 16 points (Lloyd on 1536), k=6" in caplog.messages
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_gpu_failure_falls_back_to_cpu_with_a_warning(monkeypatch, caplog):
    x = _blobs()
    want = km.kmeans(x, 6, seed=1)
    fake = GpuBuild(gpus=1, gpu_fails=True)
    monkeypatch.setattr(km, "faiss", fake)
    assert km.kmeans_backend() == "faiss-cpu"            # the last run's
    monkeypatch.setattr(km, "_LAST", {"backend": None, "reason": None})
    assert km.kmeans_backend() == "faiss-gpu"            # no run yet: what the next one tries
    got = km.kmeans(x, 6, seed=1)
    np.testing.assert_array_equal(got[1], want[1])
    assert fake.gpu_calls == 1 and km.kmeans_backend() == "faiss-cpu"
    assert km.kmeans_fallback_reason() == "GPU k-means failed (CUDA error: out of memory)"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["k-means runs on faiss-cpu: GPU k-means failed (CUDA error: out of memory)"]
    km.kmeans(x, 6, seed=1)                              # the same reason warns once
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_gpu_build_reports_gpu_or_why_not(monkeypatch, caplog):
    monkeypatch.setattr(km, "faiss", GpuBuild(gpus=1, gpu_fails=False))
    km.kmeans(_blobs(), 6)
    assert km.kmeans_backend() == "faiss-gpu" and km.kmeans_fallback_reason() is None
    monkeypatch.setattr(km, "faiss", GpuBuild(gpus=0, gpu_fails=False))
    km.kmeans(_blobs(), 6)
    assert km.kmeans_backend() == "faiss-cpu"
    assert "sees no GPU" in km.kmeans_fallback_reason()
    assert any("sees no GPU" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)


def test_without_faiss_numpy_kmeans_and_knn_still_work(monkeypatch, caplog):
    x = _blobs(4000, 16, 8, seed=2)
    _, _, ref_dist = km.kmeans(x, 8, seed=2)
    ref_knn = knn.knn_indices(x[:500], x[500:900], 4)
    monkeypatch.setattr(km, "faiss", None)
    monkeypatch.setattr(knn, "faiss", None)
    centroids, assign, dist = km.kmeans(x, 8, seed=2)
    brute = ((x[:, None, :] - centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(assign, brute.argmin(1))
    np.testing.assert_allclose(dist, brute.min(1), rtol=1e-3, atol=1e-3)
    assert dist.sum() <= 1.02 * ref_dist.sum()
    assert km.kmeans_backend() == "numpy" and "prunediff[cpu]" in km.kmeans_fallback_reason()
    assert any("prunediff[cpu]" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)
    np.testing.assert_array_equal(knn.knn_indices(x[:500], x[500:900], 4), ref_knn)


def _requirements(text: str) -> list[str]:
    return [ln.split(";")[0].strip() for ln in text.splitlines()
            if ln.strip() and not ln.strip().startswith("#")]


def test_one_faiss_per_install():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    base = _requirements(cfg["options"]["install_requires"])
    extras = {k: _requirements(v) for k, v in cfg["options.extras_require"].items()}
    faiss_of = {name: [r for r in reqs if r.lower().startswith("faiss")]
                for name, reqs in {"": base, **extras}.items()}
    assert faiss_of[""] == []                           # extras only add: none in the base
    assert [r.split(">")[0] for r in faiss_of["cpu"]] == ["faiss-cpu"]
    assert [r.split(">")[0] for r in faiss_of["gpu"]] == ["faiss-gpu-cu12"]
    assert all(not v for k, v in faiss_of.items() if k not in ("cpu", "gpu"))
    assert any(r.startswith("huggingface_hub") for r in base)
    assert "-e '.[dev,cpu]'" in (REPO / "Makefile").read_text()
