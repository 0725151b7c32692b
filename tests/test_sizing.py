"""--dry-run's cost estimate (orchestrator/sizing.py): the arithmetic on a tiny config
against a hand computation, "not measured" for configurations missing from the table,
and the committed table's entries all well formed."""

from __future__ import annotations

import pytest

from orchestrator.config import config_from_dict
from orchestrator.config.plan import TrialPlan
from orchestrator.sizing import THROUGHPUTS, estimate, format_estimate, latent_shape, load_throughputs
from tests.conftest import minimal_config

CPU = "cpu"


def _tiny(**over):
    d = minimal_config()
    d["autoencoder"] = {"preset": "vq-f4-c4", "train_steps": 10, "batch_size": 8}
    d["embed"] = {"embedders": ["pixels"]}
    d["pruning"] = {"ratios": [0.5], "baseline": True, "methods": [{"name": "random"}]}
    d["model"] = {"preset": "DiT-Micro/2"}
    d["train"] = {"steps": 40, "batch_size": 8}
    d["sample"] = {"num_samples": 6, "steps": 3, "method": "euler", "batch_size": 6}
    d["eval"] = {"embedders": ["pixels"], "metrics": ["fd"], "num_real": 6}
    for k, v in over.items():
        d[k] = {**d.get(k, {}), **v}
    return config_from_dict(d)


def _table(lat, res=16):
    return [
        {"kind": "vqvae_train", "preset": "vq-f4-c4", "resolution": res, "batch": 8, "device": CPU, "per_s": 2.0},
        {"kind": "vqvae_encode", "preset": "vq-f4-c4", "resolution": res, "device": CPU, "per_s": 100.0},
        {"kind": "vqvae_decode", "preset": "vq-f4-c4", "resolution": res, "device": CPU, "per_s": 50.0},
        {"kind": "embed", "embedder": "pixels", "resolution": res, "device": CPU, "per_s": 1000.0},
        {"kind": "dit_train", "model": "DiT-Micro/2", "latent": lat, "batch": 8, "device": CPU, "per_s": 4.0},
        {"kind": "dit_sample", "model": "DiT-Micro/2", "latent": lat, "method": "euler", "device": CPU,
         "per_s": 9.0},
    ]


def test_estimate_arithmetic_on_a_tiny_config():
    cfg = _tiny()
    ds = cfg.data.datasets[0]
    assert ds.resolution == 16, "the table above is written for 16x16 images"
    lat = latent_shape("vq-f4-c4", 16)
    assert lat == [4, 4, 4]
    n = 120
    est = {e.stage: e for e in estimate(cfg, _table(lat), images={ds.name: n})}
    assert set(est) == {"encode", "embed", "sweep", "eval"}      # random needs no proxy
    trials = len(TrialPlan.from_config(cfg))
    assert trials == 2                                           # full + random at 0.5
    assert est["encode"].hours == pytest.approx((10 / 2.0 + n / 100.0) / 3600)
    # pixels only: the training images and the held-out reference (eval.num_real = 6)
    assert est["embed"].hours == pytest.approx((n + 6) / 1000.0 / 3600)
    assert "6 held-out reference images" in est["embed"].work
    assert est["sweep"].hours == pytest.approx((trials * 40 / 4.0 + trials * 6 * 3 / 9.0) / 3600)
    assert est["eval"].hours == pytest.approx((trials * 6 / 50.0 + trials * 6 / 1000.0) / 3600)
    text = format_estimate(cfg, list(est.values()))
    total = sum(e.hours for e in est.values())
    assert total < 100 and f"total   {total:.3g} CPU-h" in text and "not measured" not in text


def test_unmeasured_configuration_prints_not_measured():
    cfg = _tiny(model={"preset": "DiT-Tiny/2"}, sample={"method": "heun"})
    lat = latent_shape("vq-f4-c4", 16)
    est = {e.stage: e for e in estimate(cfg, _table(lat), images={cfg.data.datasets[0].name: 50})}
    assert est["sweep"].hours is None
    assert any("DiT-Tiny/2" in m for m in est["sweep"].missing)
    assert est["encode"].hours is not None
    text = format_estimate(cfg, list(est.values()))
    assert "sweep   all trials" in text and "not measured: dit_train" in text
    assert "not measured: sweep[all trials]" in text
    # an unknown image count is said, not guessed
    est = estimate(cfg, _table(lat), images={cfg.data.datasets[0].name: None})
    assert [e.stage for e in est] == ["encode", "embed", "sweep", "eval"]   # random: no proxy
    assert est[0].hours is None and "image count unknown" in est[0].work


def test_committed_table_is_well_formed():
    entries = load_throughputs(THROUGHPUTS)
    import yaml

    sources = yaml.safe_load(THROUGHPUTS.read_text())["sources"]
    assert entries
    for e in entries:
        assert e["per_s"] > 0 and e["device"] in ("cpu", "gpu"), e
        assert e["source"] in sources, e
    for s in sources.values():
        assert {"command", "machine", "date"} <= set(s), s


def test_proxy_gradients_priced_by_their_parameters():
    """GraNd's output-layer gradients and MoSo's full gradients are priced at their own
    measured rates (stats_grad params output / all), not one rate times a guessed factor."""
    proxy = {"model": "DiT-Micro/2", "steps": 20, "batch_size": 8, "log_points": 2, "draws": 3,
             "grad_checkpoints": 1, "grand_draws": 5, "el2n_draws": 4}
    methods = [{"name": "grand"}, {"name": "moso"}, {"name": "el2n"}]
    cfg = _tiny(pruning={"methods": methods}, proxy=proxy)
    lat = latent_shape("vq-f4-c4", 16)
    key = {"model": "DiT-Micro/2", "latent": lat, "device": CPU}
    table = _table(lat) + [
        {"kind": "stats_loss", **key, "per_s": 100.0},
        {"kind": "stats_grad", **key, "params": "output", "per_s": 40.0},
        {"kind": "stats_grad", **key, "params": "all", "per_s": 10.0}]
    n = 60
    est = {e.stage: e for e in estimate(cfg, table, images={cfg.data.datasets[0].name: n})}
    expected = (20 / 4.0 + n * 4 / 100.0 + n * 5 / 40.0 + n * 2 * 3 / 10.0) / 3600
    assert est["proxy"].hours == pytest.approx(expected)
    # grand_params all: GraNd's gradients cost the full rate; without that entry: "not measured"
    cfg = _tiny(pruning={"methods": methods}, proxy={**proxy, "grand_params": "all"})
    est = {e.stage: e for e in estimate(cfg, table, images={cfg.data.datasets[0].name: n})}
    assert est["proxy"].hours == pytest.approx((20 / 4.0 + n * 4 / 100.0 + n * (5 + 6) / 10.0) / 3600)
    est = {e.stage: e for e in estimate(cfg, table[:-1], images={cfg.data.datasets[0].name: n})}
    assert [m for m in est["proxy"].missing if "'params': 'all'" in m], est["proxy"].missing


def test_classifier_space_training_is_priced_in_the_embed_stage():
    cfg = _tiny(eval={"embedders": ["classifier"], "primary": "classifier", "metrics": ["fd"],
                      "num_real": 6, "classifier": {"steps": 40, "batch_size": 16}})
    lat = latent_shape("vq-f4-c4", 16)
    table = _table(lat) + [
        {"kind": "embed", "embedder": "classifier", "resolution": 16, "device": CPU, "per_s": 500.0},
        {"kind": "classifier_train", "resolution": 16, "batch": 16, "device": CPU, "per_s": 8.0}]
    n = 120
    est = {e.stage: e for e in estimate(cfg, table, images={cfg.data.datasets[0].name: n})}
    # pixels (selection) on the training images; classifier on them and the reference; its training
    assert est["embed"].hours == pytest.approx((n / 1000.0 + (n + 6) / 500.0 + 40 / 8.0) / 3600)
    est = {e.stage: e for e in estimate(cfg, table[:-1], images={cfg.data.datasets[0].name: n})}
    assert any("classifier_train" in m for m in est["embed"].missing)
