"""The encode stage's VQ-VAE: a small dataset with one worker trains in one Ray task
(no Ray Train) and gets the same weights as the Ray Train worker's in-memory path."""

from __future__ import annotations

import shutil
import tempfile

import pytest
import torch

from orchestrator.storage.cache import ArtifactCache
from tests.conftest import minimal_config

STEPS = 6


@pytest.fixture
def local_ray(monkeypatch):
    import ray

    monkeypatch.setenv("RAY_ADDRESS", "local")
    ray_tmp = tempfile.mkdtemp(prefix="ve", dir="/tmp")   # socket paths <= 107 chars
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _weights(cache: ArtifactCache, key: str) -> dict[str, torch.Tensor]:
    from orchestrator.training.evaluate import vqvae_from_cache

    return vqvae_from_cache(cache, key).state_dict()


@pytest.mark.ray
def test_single_process_vqvae_matches_the_ray_train_worker(tmp_path, write_config, local_ray):
    from orchestrator.config import load_config
    from orchestrator.runtime.cluster import current_plan
    from orchestrator.runtime.ray_executor import RayExecutor
    from orchestrator.runtime.ray_sources import load_dataset
    from orchestrator.runtime.train import call_isolated
    from orchestrator.runtime.vqvae import fit_vqvae
    from orchestrator.stages.encode import train_vqvae, vqvae_key

    raw = minimal_config(
        experiment={"name": "t", "seeds": [0], "output_dir": str(tmp_path / "out")},
        autoencoder={"preset": "vq-f4-c4", "train_steps": STEPS, "batch_size": 16})
    cfg = load_config(write_config(raw), check=False)
    ds = cfg.data.datasets[0]
    source = load_dataset(ds)
    plan = current_plan(cfg.resources)
    assert plan.num_workers == 1
    single = ArtifactCache(str(tmp_path / "single"))
    trained = ArtifactCache(str(tmp_path / "train"))
    key = vqvae_key(single, cfg, source.fingerprint, ds.seed)

    metrics = train_vqvae(single, cfg, source, ds, RayExecutor(plan), key)
    assert metrics["step"] == STEPS and metrics["train_s"] > 0
    assert metrics["recon"] > 0
    # no Ray Train run was started for it: its storage holds no run folder
    assert not any((tmp_path / "out").rglob("vqvae-*"))

    ae = cfg.autoencoder
    ae_cfg = {"preset": ae.preset, "steps": STEPS, "batch_size": ae.batch_size, "lr": ae.lr,
              "seed": ds.seed, "in_memory": True}
    got = call_isolated(fit_vqvae, ae_cfg, plan, "vqvae-train-path", str(tmp_path / "ray"),
                        0, source.dataset.materialize(), trained.root, key)
    assert got["step"] == STEPS and got["train_s"] > 0

    a, b = _weights(single, key), _weights(trained, key)
    assert a.keys() == b.keys()
    for name, value in b.items():
        assert torch.equal(a[name], value), f"{name} differs between the two paths"
    # and training happened: the weights are not the seeded initialisation
    from models.vqvae import build_vqvae

    torch.manual_seed(ds.seed)
    init = build_vqvae("vq-f4-c4").state_dict()
    first_conv = next(k for k, v in init.items() if v.dim() == 4)
    assert not torch.equal(init[first_conv], a[first_conv])
