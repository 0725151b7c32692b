"""Split-half reliability of the statistic methods' scores.

(a) the per-draw split reproduces the former full statistics (the ``pruning.stats``
functions at K draws) and each half is its draws' own statistic (MoSo: the half's own
gradients and mean gradient, against float64 loop gradients); (b) the reliability rows'
split-half rho is scipy's Spearman of the two half-scores; (c) a statistic of one draw
has no halves and its rho is NaN with the reason. The resume check (identical halves
after a cut) is in ``test_proxy_resume.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from pruning import stats
from pruning import stats_halves as sh
from tests.table_helpers import save_table
from tests.stats_helpers import TinyNet, flow_loss, loop_grads, tiny_data


def test_half_bounds():
    assert sh.half_bounds(1) == {} and sh.half_bounds(0) == {}
    assert sh.half_bounds(2) == {"a": (0, 1), "b": (1, 2)}
    assert sh.half_bounds(5) == {"a": (0, 2), "b": (2, 5)}
    assert sh.half_key("moso", "a") == "moso_half_a"
    with pytest.raises(ValueError):
        sh.half_key("moso", "c")


@pytest.mark.parametrize("k", [1, 2, 5])
def test_loss_and_grad_norm_split_reproduce_the_full_statistics(k, one_torch_thread):
    torch.manual_seed(0)
    model = TinyNet()
    x, y, ids = tiny_data(b=7)
    draws = sh.per_sample_loss_draws(model, flow_loss, x, y, ids, k, 4, noise="shared")
    means = sh.split_means(draws)
    old = stats.per_sample_losses(model, flow_loss, x, y, ids, k, 4, noise="shared")
    assert torch.equal(means["full"], old)                     # bit for bit
    assert set(means) == ({"full"} if k < 2 else {"full", "a", "b"})
    for half, (lo, hi) in sh.half_bounds(k).items():           # each half: its draws only
        np.testing.assert_allclose(means[half].numpy(), draws[:, lo:hi].mean(1).numpy(), rtol=0)
    # the per-draw losses are the draws' own losses (batch of one draw at a time)
    t, eps = stats.fixed_draws(ids, k, tuple(x.shape[1:]), 4, noise="shared")
    model.eval()
    with torch.no_grad():
        for j in range(k):
            np.testing.assert_allclose(draws[:, j].numpy(),
                                       flow_loss(model, x, y, t[:, j], eps[:, j]).double().numpy(),
                                       rtol=1e-6)
    norms = sh.per_sample_grad_norm_draws(model, flow_loss, x, y, ids, k, 4, chunk=3)
    old = stats.per_sample_grad_norms(model, flow_loss, x, y, ids, k, 4, chunk=3)
    np.testing.assert_allclose(sh.split_means(norms)["full"].numpy(), old.numpy(), rtol=1e-13)
    loop = np.linalg.norm(loop_grads(model, x, y, ids, k, 4, per_draw=True), axis=2)  # (B, K)
    for half, (lo, hi) in sh.half_bounds(k).items():
        np.testing.assert_allclose(sh.split_means(norms)[half].numpy(), loop[:, lo:hi].mean(1),
                                   rtol=1e-4)


def _moso_halves(model, x, y, ids, k, seed, chunk):
    n = x.shape[0]
    sums = sh.gradient_sum_halves(model, flow_loss, x, y, ids, k, seed, chunk)
    g = {h: sums[h] / n for h in sh.HALVES}
    g["full"] = sh.combine_halves(g, k)
    terms = sh.moso_terms_halves(model, flow_loss, x, y, ids, k, seed, g, chunk)
    return {v: stats.moso_scores(n, g[v], *terms[v]) for v in g}


@pytest.mark.parametrize("k,chunk", [(2, 1), (3, 4), (5, 64)])
def test_moso_split_reproduces_the_full_score_and_scores_each_half_on_its_own(k, chunk,
                                                                               one_torch_thread):
    torch.manual_seed(1)
    model = TinyNet()
    x, y, ids = tiny_data(b=6)
    n, seed = x.shape[0], 2
    got = _moso_halves(model, x, y, ids, k, seed, chunk)
    # the former two passes at K draws: equal up to float32 rounding of the gradients
    g_sum = stats.gradient_sum(model, flow_loss, x, y, ids, k, seed, chunk)
    sq, dots = stats.moso_terms(model, flow_loss, x, y, ids, k, seed, g_sum / n, chunk)
    old = stats.moso_scores(n, g_sum / n, sq, dots)
    np.testing.assert_allclose(got["full"], old, rtol=1e-6)
    # each half from float64 loop gradients of its own draws (its own mean gradient)
    per_draw = loop_grads(model, x, y, ids, k, seed, per_draw=True)     # (B, K, P)
    for half, (lo, hi) in sh.half_bounds(k).items():
        gz = per_draw[:, lo:hi].mean(axis=1)                              # (B, P)
        gm = gz.mean(axis=0)
        ref = stats.moso_scores(n, torch.from_numpy(gm), torch.from_numpy((gz ** 2).sum(1)),
                                torch.from_numpy(gz @ gm))
        np.testing.assert_allclose(got[half], ref, rtol=1e-5)
    with pytest.raises(ValueError, match="k >= 2"):
        sh.gradient_sum_halves(model, flow_loss, x, y, ids, 1, seed, chunk)


def _dit_and_batch():
    models = pytest.importorskip("models")
    model = models.build_dit("DiT-Micro/2", input_size=4, in_channels=2, num_classes=3)
    with torch.no_grad():   # DiT zero-inits its output layers; perturb so grads are generic
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model, tiny_data(b=5, c=2, hw=4)


def test_proxy_measure_keeps_the_full_statistics_and_adds_the_halves(one_torch_thread):
    """``proxy_stats.measure_stats`` on a tiny DiT: the full columns are the former statistics
    (the pruning.stats functions at K draws); the halves exist exactly where K >= 2."""
    from models.dit import DiT
    from models.transport import per_sample_flow_loss as loss_fn
    from orchestrator.training.proxy_stats import measure_stats, record_keys

    torch.manual_seed(2)
    model, (x, y, ids) = _dit_and_batch()
    cfg = {"draws": 3, "el2n_draws": 1, "grand_draws": 4, "seed": 5, "chunk": 3, "n": 5,
           "noise": "shared", "grand_params": "output"}
    want = ("loss_traj", "loss_last", "grad_norm", "moso")
    got = {}
    for which in ("log", "last", "grad"):
        got.update(measure_stats(cfg, model, x, y, ids, want, which, 1))
    assert sorted(got) == sorted(record_keys(cfg, want))
    assert "loss_last_half_a" not in got and "moso_half_b" in got and "grad_norm_half_a" in got
    kw = {"noise": "shared"}
    np.testing.assert_array_equal(got["loss_traj"],
                                  stats.per_sample_losses(model, loss_fn, x, y, ids, 3, 5, **kw))
    np.testing.assert_array_equal(got["loss_last"],
                                  stats.per_sample_losses(model, loss_fn, x, y, ids, 1, 5, **kw))
    np.testing.assert_allclose(got["grad_norm"], stats.per_sample_grad_norms(
        model, loss_fn, x, y, ids, 4, 5, 3, only=DiT.OUTPUT_LAYER, **kw), rtol=1e-13)
    g_sum = stats.gradient_sum(model, loss_fn, x, y, ids, 3, 5, 3, **kw)
    terms = stats.moso_terms(model, loss_fn, x, y, ids, 3, 5, g_sum / 5, 3, **kw)
    np.testing.assert_allclose(got["moso"], stats.moso_scores(5, g_sum / 5, *terms), rtol=1e-6)
    # the halves are the half draws' statistics (draws [0, 1) and [1, 3) of K = 3)
    d = sh.per_sample_loss_draws(model, loss_fn, x, y, ids, 3, 5, **kw).numpy()
    np.testing.assert_allclose(got["loss_traj_half_a"], d[:, 0], rtol=0)
    np.testing.assert_allclose(got["loss_traj_half_b"], d[:, 1:].mean(1), rtol=1e-15)


# -- the score stage: half scores and the reliability rows ------------------------------------

N = 40


def _method(name: str):
    from orchestrator.config import MethodConfig

    return MethodConfig(name=name, label=name)


def _scored(tmp_path, halves: bool, seeds=(0, 1)):
    """A dataset with a proxy artifact per seed (el2n's loss_last, grand's grad_norm, their
    halves when ``halves``), scored and selected by the stages' own functions."""
    from types import SimpleNamespace

    from orchestrator.stages.proxy import halves_reason
    from orchestrator.stages.score import DatasetArtifacts, build_subsets
    from orchestrator.storage.cache import ArtifactCache

    cache = ArtifactCache(str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    lat = save_table(cache, cache.key("latents", 1, t="x"),
                     latent=np.zeros((N, 4, 2, 2), np.float32), label=np.zeros(N, np.int64),
                     id=np.arange(500, 500 + N, dtype=np.int64))
    proxy, arrays = {}, {}
    for s in seeds:
        key = proxy[s] = cache.key("proxy", 4, seed=s)
        base = {"loss_last": rng.random((N, 1)), "grad_norm": rng.random((N, 2))}
        a = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in base.items()}
        b = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in base.items()}
        arrays[s] = dict(base)
        if halves:
            arrays[s].update({f"{k}_half_a": v for k, v in a.items()})
            arrays[s].update({f"{k}_half_b": v for k, v in b.items()})
        cache.save_arrays(key, **arrays[s])
        cfg_draws = {"el2n_draws": 12 if halves else 1, "grand_draws": 12, "draws": 3}
        cache.save_json(key, {"halves": {st: halves_reason(cfg_draws, st)
                                         for st in ("loss_last", "grad_norm")}})
    art = DatasetArtifacts("fm", "fp", 1, "vq", lat, {}, proxy)
    cfg = SimpleNamespace(
        pruning=SimpleNamespace(methods=[_method("el2n"), _method("grand"), _method("random")],
                                ratios=[0.5], baseline=False),
        experiment=SimpleNamespace(seeds=list(seeds)),
        data=SimpleNamespace(datasets=[SimpleNamespace(name="fm")]))
    subsets = build_subsets(cache, cfg, {"fm": art}, fresh=False)
    return cache, cfg, {"fm": art}, subsets, arrays


def test_split_half_rho_is_spearman_of_the_two_half_scores(tmp_path):
    from orchestrator.stages.score import reliability_frame, reliability_section, score_reliability

    cache, cfg, arts, subsets, arrays = _scored(tmp_path, halves=True)
    rows = {r["method"]: r for r in score_reliability(cache, cfg, arts, subsets)}
    assert sorted(rows) == ["el2n", "grand"]                    # random reads no statistics
    # computed here from the proxy's half statistics (el2n: loss_last's last column; grand:
    # grad_norm's last column, both keep "high")
    for method, stat in (("el2n", "loss_last"), ("grand", "grad_norm")):
        want = [sps.spearmanr(arrays[s][f"{stat}_half_a"][:, -1],
                              arrays[s][f"{stat}_half_b"][:, -1]).statistic for s in (0, 1)]
        row = rows[method]
        assert row["split_half_rho"] == pytest.approx(np.mean(want), abs=1e-12)
        assert row["split_half_seeds"] == 2 and row["split_half_reason"] == ""
        assert 0.3 < row["split_half_rho"] < 1   # the halves share their base signal
    table = reliability_frame(list(rows.values()))
    assert table.set_index("method").loc["el2n", "split_half_rho"] == rows["el2n"]["split_half_rho"]
    md = reliability_section(cache, cfg, arts, subsets)
    assert f"{rows['el2n']['split_half_rho']:+.2f}" in md and "not measured:" not in md
    from orchestrator.stages.score import reliability_metrics

    metrics = reliability_metrics(list(rows.values()))   # logged on the MLflow parent run
    assert metrics["reliability/fm/el2n/split_half_rho"] == rows["el2n"]["split_half_rho"]
    assert metrics["reliability/fm/grand/proxy_to_proxy_rho"] == rows["grand"]["proxy_to_proxy_rho"]
    # the full scores are untouched by the halves
    from orchestrator.stages.score import ensure_scores

    key, _ = ensure_scores(cache, _method("el2n"), 0, arts["fm"], fresh=False)
    np.testing.assert_array_equal(cache.load_arrays(key)["scores"], arrays[0]["loss_last"][:, -1])


def test_single_draw_statistic_reports_nan_with_the_reason(tmp_path):
    from orchestrator.stages.score import reliability_frame, reliability_section, score_reliability

    cache, cfg, arts, subsets, _ = _scored(tmp_path, halves=False, seeds=(0,))
    rows = {r["method"]: r for r in score_reliability(cache, cfg, arts, subsets)}
    el2n = rows["el2n"]
    assert math.isnan(el2n["split_half_rho"]) and el2n["split_half_seeds"] == 0
    assert el2n["split_half_reason"].startswith("proxy.el2n_draws = 1")
    assert "no halves" in rows["grand"]["split_half_reason"]   # the artifact lacks them
    assert reliability_frame(list(rows.values()))["flag"].tolist() == ["not measured"] * 2
    md = reliability_section(cache, cfg, arts, subsets)
    assert "Split-half rho of el2n not measured: proxy.el2n_draws = 1" in md
    from orchestrator.stages.score import reliability_metrics

    assert reliability_metrics(list(rows.values())) == {}   # NaN rhos are not logged


def test_record_keys_leave_out_the_halves_of_a_single_draw():
    from orchestrator.training.proxy_stats import record_keys

    cfg = {"draws": 1, "el2n_draws": 2, "grand_draws": 1}
    assert record_keys(cfg, ["loss_traj", "loss_last", "grad_norm", "moso"]) == [
        "loss_traj", "loss_last", "loss_last_half_a", "loss_last_half_b", "grad_norm", "moso"]


def test_proxy_stage_stores_the_halves_and_the_score_stage_reads_them(tmp_path, monkeypatch,
                                                                      one_torch_thread):
    """ensure_proxy_stats (on the local executor: the worker's loop here, one rank) merges the
    halves into the proxy artifact and records K and why a statistic has none; the score
    stage then measures split-half rho from them, NaN with the reason for EL2N at one draw."""
    from orchestrator.config.loader import config_from_dict
    from orchestrator.runtime.executor import LocalExecutor
    from orchestrator.stages import proxy as proxy_stage
    from orchestrator.stages.score import DatasetArtifacts, build_subsets, score_reliability
    from orchestrator.storage.cache import ArtifactCache
    from tests.conftest import minimal_config

    raw = minimal_config(proxy={"steps": 2, "batch_size": 8, "log_points": 1,
                                "grad_checkpoints": 1, "draws": 2, "el2n_draws": 1,
                                "grand_draws": 2, "chunk": 4})
    raw["pruning"]["methods"] = [{"name": "el2n"}, {"name": "grand"}, {"name": "moso"}]
    cfg = config_from_dict(raw, (), base_dir=tmp_path)
    cache = ArtifactCache(str(tmp_path / "cache"))
    n = 12
    rng = np.random.default_rng(1)
    lat = save_table(cache, cache.key("latents", 1, t="p"),
                     latent=rng.standard_normal((n, 4, 4, 4)).astype(np.float32),
                     label=rng.integers(0, 3, n).astype(np.int64))
    ds = cfg.data.datasets[0]
    key = proxy_stage.ensure_proxy_stats(cache, cfg, ds, lat, 3, LocalExecutor(device="cpu"),
                                         False, seed=0)
    arrays, record = cache.load_arrays(key), cache.load_json(key)
    assert sorted(arrays) == sorted(["loss_last", "grad_norm", "grad_norm_half_a",
                                     "grad_norm_half_b", "moso", "moso_half_a", "moso_half_b"])
    assert record["draws"] == {"loss_last": 1, "grad_norm": 2, "moso": 2}
    assert record["halves"]["moso"] == "" and "el2n_draws = 1" in record["halves"]["loss_last"]
    art = DatasetArtifacts(ds.name, "fp", 3, "vq", lat, {}, {0: key})
    subsets = build_subsets(cache, cfg, {ds.name: art}, fresh=False)
    rows = {r["method"]: r for r in score_reliability(cache, cfg, {ds.name: art}, subsets)}
    assert math.isnan(rows["el2n"]["split_half_rho"])
    assert rows["el2n"]["split_half_reason"].startswith("proxy.el2n_draws = 1")
    for method, stat in (("grand", "grad_norm"), ("moso", "moso")):
        assert rows[method]["split_half_seeds"] == 1 and rows[method]["split_half_reason"] == ""
        if stat == "grad_norm":   # GraNd's scores are the last column itself
            want = sps.spearmanr(arrays["grad_norm_half_a"][:, -1],
                                 arrays["grad_norm_half_b"][:, -1]).statistic
            assert rows[method]["split_half_rho"] == pytest.approx(want, abs=1e-12)
        assert np.isfinite(rows[method]["split_half_rho"])
