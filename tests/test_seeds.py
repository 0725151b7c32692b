"""Seeds vary what they should: the trial seed draws the DiT's initial weights (and its
t/noise, class-dropout and batch-order streams), the experiment seed the proxy's; the
same seed gives bit-identical weights and statistics."""

from __future__ import annotations

import numpy as np
import torch

from orchestrator.config import EvalConfig, ModelConfig, SampleConfig, TrainConfig, Trial
from orchestrator.training.loop import LocalRuntime, build_model
from orchestrator.training.proxy_stats import train_proxy
from orchestrator.training.records import TrialInputs, TrialSpec
from orchestrator.training.trial import train_model
from tests.table_helpers import save_table

N = 24


def _data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, N).astype(np.int64)
    latents = rng.standard_normal((N, 4, 8, 8)).astype(np.float32)
    subset = np.arange(0, N, 2, dtype=np.int64)
    # a trial's inputs (the subset's latents) and the proxy's (every sample's)
    return {"ids": np.arange(N, dtype=np.int64), "labels": labels, "subset": subset,
            "latents": latents[subset], "train_labels": labels[subset], "all_latents": latents}


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_build_model_initial_weights_follow_the_init_seed():
    def init(seed: int, init_seed: int | None = None) -> dict[str, torch.Tensor]:
        model, _ = build_model("DiT-Micro/2", (4, 8, 8), 3, seed, 0, 1, init_seed=init_seed)
        return _weights(model)

    torch.manual_seed(123)                       # the global generator plays no part
    a = init(0)
    torch.manual_seed(456)
    assert _same(a, init(0))
    assert not _same(a, init(1))
    assert _same(init(1, init_seed=0), a)        # init_seed overrides the stream seed
    b = init(1)
    assert sum(not torch.equal(a[k], b[k]) for k in a) >= 4   # not one layer only


def _spec(seed: int, steps: int, lr: float) -> TrialSpec:
    return TrialSpec(key="trial/x", cache_root="/unused", run_name="r",
                     trial=Trial("d", "full", 0.0, seed), params={},
                     inputs=TrialInputs("l", "s", "v", "f"), conditional=True, num_classes=3,
                     model=ModelConfig(preset="DiT-Micro/2"),
                     train=TrainConfig(steps=steps, batch_size=4, lr=lr, ema_decay=0.0,
                                       checkpoint_every=100, log_every=1),
                     sample=SampleConfig(), eval=EvalConfig())


def test_trial_seed_sets_the_initial_weights_and_same_seed_is_bit_identical(one_torch_thread):
    def trained(seed: int, steps: int = 3, lr: float = 1e-3):
        # ema_decay 0: the EMA copy is the trained model itself
        model, curve, _ = train_model(_spec(seed, steps, lr), _data(), LocalRuntime())
        return _weights(model), curve

    # lr = 0 leaves the weights at their initial values: two seeds start apart
    init0, _ = trained(0, steps=1, lr=0.0)
    init1, _ = trained(1, steps=1, lr=0.0)
    assert not _same(init0, init1)
    w0, c0 = trained(0)
    w0b, c0b = trained(0)
    assert _same(w0, w0b) and c0 == c0b         # the same seed: bit-identical
    w1, c1 = trained(1)
    assert not _same(w0, w1) and c0 != c1


def _proxy(seed: int) -> dict[str, np.ndarray]:
    cfg = {"model": "DiT-Micro/2", "steps": 4, "batch_size": 8, "lr": 1e-3, "log_points": 2,
           "grad_checkpoints": 1, "draws": 2, "chunk": 8, "n": N, "seed": seed,
           "stats": ["loss_traj", "grad_norm"], "conditional": True, "num_classes": 3}
    full = _data()
    data = {"ids": full["ids"], "labels": full["labels"], "latents": full["all_latents"]}
    rec, _ = train_proxy(cfg, data, 0, 1, torch.device("cpu"), lambda m: m, None,
                         lambda *_: None)
    return rec


def test_proxy_statistics_follow_the_experiment_seed(one_torch_thread):
    a, again, b = _proxy(0), _proxy(0), _proxy(1)
    for key in ("loss_traj", "grad_norm"):
        assert a[key].shape == (N, 2 if key == "loss_traj" else 1)
        np.testing.assert_array_equal(a[key], again[key])      # bit-identical
        assert not np.allclose(a[key], b[key])                   # another proxy


def test_each_experiment_seed_scores_with_its_own_proxy(tmp_path):
    """score keys and the statistics a score-based method reads follow the seed's proxy."""
    from orchestrator.config import MethodConfig
    from orchestrator.stages.score import DatasetArtifacts, ensure_scores
    from orchestrator.storage.cache import ArtifactCache

    cache = ArtifactCache(str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    lat = cache.key("latents", 1, t="x")
    save_table(cache, lat, latent=np.zeros((30, 4, 2, 2), np.float32),
               label=np.zeros(30, np.int64))
    proxy = {s: cache.key("proxy", 2, seed=s) for s in (0, 1)}
    for s, key in proxy.items():
        cache.save_arrays(key, loss_traj=rng.random((30, 3)), loss_last=rng.random((30, 1)))
    art = DatasetArtifacts("d", "fp", 1, "vq", lat, {}, proxy)
    method = MethodConfig(name="el2n", label="el2n")
    k0, _ = ensure_scores(cache, method, 0, art, fresh=False)
    k1, _ = ensure_scores(cache, method, 1, art, fresh=False)
    assert k0 != k1
    s0, s1 = cache.load_arrays(k0)["scores"], cache.load_arrays(k1)["scores"]
    assert not np.allclose(s0, s1)
