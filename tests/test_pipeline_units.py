"""Pipeline pieces that need no Ray: table, plots, resource planning, batching, keys."""

from __future__ import annotations

import math
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from orchestrator.config.plan import TrialPlan
from orchestrator.runtime.resources import plan_resources
from orchestrator.stages.report import (comparison_table, plot_methods_vs_ratio, plot_metric_vs_ratio,
                                        plotted_metrics, to_markdown, write_table)
from orchestrator.training.loop import EpochBatches
from orchestrator.training.records import TrialResult
from orchestrator.storage.tables import Table
from tests.table_helpers import save_table


def _res(dataset, method, ratio, seed, **metrics):
    """A result record as a finished trial caches it (result.json), read back typed."""
    return TrialResult.from_json(
        {"key": f"trial/{dataset}{method}{ratio}{seed}", "params": {}, "metrics": metrics,
         "trial": {"dataset": dataset, "method": method, "ratio": ratio, "seed": seed},
         "files": {"grid": "trialgrid/x", "manifest": "subset/x"}})


def test_table_mean_std_and_order(tmp_path):
    results = [_res("a", "random", 0.5, 0, fd_x=2.0, f_score=0.5),
               _res("a", "random", 0.5, 1, fd_x=4.0, f_score=0.7),
               _res("a", "full", 0.0, 0, fd_x=1.0, f_score=0.9),
               _res("a", "full", 0.0, 1, fd_x=1.0, f_score=0.9),
               _res("a", "clustering", 0.25, 0, fd_x=3.0, f_score=0.1),
               _res("a", "random", 0.25, 0, fd_x=5.0, f_score=0.2)]
    table = comparison_table(results, ["random", "clustering"])
    assert list(zip(table["method"], table["ratio"])) == [
        ("full", 0.0), ("random", 0.25), ("random", 0.5), ("clustering", 0.25)]
    row = table[(table["method"] == "random") & (table["ratio"] == 0.5)].iloc[0]
    assert row["fd_x_mean"] == 3.0 and math.isclose(row["fd_x_std"], np.std([2.0, 4.0], ddof=1))
    assert row["n_seeds"] == 2
    md = to_markdown(table)
    assert md.splitlines()[0] == "| dataset | method | ratio | fd_x | f_score | seeds |"
    assert "| a | random | 0.50 | 3.0000 ± 1.4142 | 0.6000 ± 0.1414 | 2 |" in md
    assert "| a | random | 0.25 | 5.0000 | 0.2000 | 1 |" in md   # one seed: no std
    paths = write_table(table, tmp_path)
    assert (tmp_path / "results.csv").read_text().startswith("dataset,method,ratio,fd_x_mean")
    assert paths["markdown"].endswith("results.md")
    plots = plot_metric_vs_ratio(table, tmp_path)
    assert sorted(p.rsplit("/", 1)[1] for p in plots) == ["ratio_clustering.png", "ratio_random.png"]
    figs = plot_methods_vs_ratio(table, tmp_path)
    assert [p.rsplit("/", 1)[1] for p in figs] == ["methods_a.png"]
    assert all(Path(p).stat().st_size > 1000 for p in plots + figs)


def test_figures_show_the_headline_metric_of_each_family_in_every_space():
    spaces = ("cls", "pixels")
    families = ("fd", "f_score", "precision", "recall", "density", "coverage", "vendi",
                "mem_nn_mean", "mem_nn_median", "mem_subset_copy_rate", "cov_kl_uniform")
    metrics = {f"{m}_{s}": 1.0 for s in spaces for m in families}
    table = comparison_table([_res("a", "full", 0.0, 0, **metrics, cov_share_c0_cls=0.1),
                              _res("a", "random", 0.5, 0, **metrics, cov_share_c0_cls=0.1)])
    assert plotted_metrics(table) == ["fd_cls", "fd_pixels", "f_score_cls", "f_score_pixels",
                                      "vendi_cls", "vendi_pixels", "mem_nn_mean_cls",
                                      "mem_nn_mean_pixels"]
    # a table without any of them (a custom metric only): every metric is plotted
    other = comparison_table([_res("a", "random", 0.5, 0, custom=1.0)])
    assert plotted_metrics(other) == ["custom"]


def _rc(**kw):
    base = dict(num_workers=1, use_gpu=False, cpus_per_worker="auto", gpus_per_actor=0.0,
                actor_pool_size=1, max_concurrent_trials="auto", max_failures=1)
    return SimpleNamespace(**{**base, **kw})


def test_resources_two_cpus_fit_two_trials():
    plan = plan_resources(_rc(), {"CPU": 2.0})
    assert plan.max_concurrent_trials == 2
    per_trial = plan.trial_cpus + plan.num_workers * plan.worker_cpus
    assert plan.max_concurrent_trials * per_trial <= 2.0
    assert plan.worker_cpus < 1.0 and plan.actor_cpus < 1.0   # whole CPUs deadlock here
    ddp = plan_resources(_rc(num_workers=2), {"CPU": 2.0})
    assert ddp.max_concurrent_trials == 1
    assert ddp.trial_cpus + 2 * ddp.worker_cpus <= 2.0


def test_resources_gpu_and_explicit_values():
    nodes = [{"CPU": 96.0, "GPU": 8.0}, {"CPU": 8.0}]
    plan = plan_resources(_rc(num_workers=8, use_gpu=True, gpus_per_actor=1.0, actor_pool_size=8),
                          {"CPU": 104.0, "GPU": 8.0}, nodes)
    assert plan.worker_resources() == {"CPU": 8.0, "GPU": 1.0}
    assert plan.max_concurrent_trials == 1 and plan.actor_gpus == 1.0
    # No GPU node yet (autoscaling cluster): leave concurrency to the autoscaler.
    plan = plan_resources(_rc(num_workers=8, use_gpu=True), {"CPU": 8.0})
    assert plan.max_concurrent_trials is None and plan.worker_gpus == 1.0
    plan = plan_resources(_rc(cpus_per_worker=0.5, max_concurrent_trials=3), {"CPU": 2.0})
    assert plan.worker_cpus == 0.5 and plan.max_concurrent_trials == 3
    with pytest.raises(ValueError, match="no CPUs.*resources.cpus_per_worker"):
        plan_resources(_rc(), {"CPU": 0.0})


def test_resources_cpu_less_head_of_an_autoscaling_cluster():
    # No CPU yet: the configured request per worker; concurrency left to the autoscaler.
    plan = plan_resources(_rc(cpus_per_worker=0.9), {"CPU": 0.0})
    assert plan.worker_resources() == {"CPU": 0.9} and plan.max_concurrent_trials is None
    assert plan.torch_threads == plan.solo_threads == plan.actor_threads == 1
    assert 0 < plan.actor_cpus <= 0.9
    fixed = plan_resources(_rc(cpus_per_worker=0.9, max_concurrent_trials=2), {"CPU": 0.0})
    assert fixed.max_concurrent_trials == 2
    gpu = plan_resources(_rc(num_workers=2, use_gpu=True), {"CPU": 0.0})
    assert gpu.worker_resources() == {"CPU": 4.0, "GPU": 1.0} and gpu.max_concurrent_trials is None


def test_epoch_batches_disjoint_ranks_and_deterministic():
    b = EpochBatches(n=10, batch_size=4, seed=3)
    seen = np.concatenate([b.indices(s) for s in range(5)])   # 20 draws = 2 epochs
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    step = EpochBatches(10, 4, 3).indices(7)
    r0, r1 = b.indices(7, rank=0, world=2), b.indices(7, rank=1, world=2)
    assert sorted(np.concatenate([r0, r1])) == sorted(step)
    assert not set(r0) & set(r1) or len(set(step)) < 4
    tiny = EpochBatches(n=3, batch_size=8, seed=0).indices(0)   # batch larger than data
    assert len(tiny) == 8 and set(tiny) == {0, 1, 2}


def test_proxy_checkpoint_steps():
    from orchestrator.training.proxy_stats import checkpoint_steps

    assert checkpoint_steps(400, 8) == [50, 100, 150, 200, 250, 300, 350, 400]
    assert checkpoint_steps(20, 1) == [20]
    assert checkpoint_steps(3, 8) == [1, 2, 3]


def test_trial_keys_depend_on_training_config():
    from dataclasses import replace

    from orchestrator.config import load_config
    from orchestrator.stages.score import DatasetArtifacts
    from orchestrator.stages.sweep import run_name, trial_key
    from orchestrator.storage.cache import ArtifactCache
    from tests.pipeline_helpers import SMOKE

    cfg = load_config(SMOKE, check=False)
    cache = ArtifactCache("/nonexistent-cache")
    art = DatasetArtifacts("fmnist", "fp", 10, "vqvae/x", "latents/x",
                           {"pixels": "embed/x", "classifier": "embed/c"}, None,
                           {"classifier": {"weights": "classifier/w", "test_accuracy": 0.5,
                                           "n_test": 4}})
    trial = list(TrialPlan.from_config(cfg))[1]
    k1 = trial_key(cache, cfg, trial, art, "subset/a")
    assert k1 == trial_key(cache, cfg, trial, art, "subset/a")
    assert k1 != trial_key(cache, cfg, trial, art, "subset/b")
    longer = replace(cfg, train=replace(cfg.train, steps=cfg.train.steps + 1))
    assert k1 != trial_key(cache, longer, trial, art, "subset/a")
    ddp = replace(cfg, resources=replace(cfg.resources, num_workers=2))
    assert k1 != trial_key(cache, ddp, trial, art, "subset/a")   # ranks seed seed*world+rank
    retrained = replace(art, trained={"classifier": {**art.trained["classifier"],
                                                     "weights": "classifier/v"}})
    assert k1 != trial_key(cache, cfg, trial, retrained, "subset/a")   # another eval space
    more = replace(cfg, resources=replace(cfg.resources, max_concurrent_trials=1))
    assert k1 == trial_key(cache, more, trial, art, "subset/a")
    assert run_name(trial, k1).startswith(trial.name + "-")


def test_evaluate_names_metrics_per_space_and_labels_generated_samples(tmp_path):
    """Metrics of a trial, per evaluation space: ``<metric>_<short>``; each space's values
    are the single-space computation in that space; cluster_coverage from nearest
    labelled neighbours."""
    from orchestrator.config import EvalConfig
    from orchestrator.storage.cache import ArtifactCache
    from orchestrator.training.evaluate import evaluate

    rng = np.random.default_rng(0)
    n = 120
    labels = np.repeat(np.arange(3), n // 3).astype(np.int64)
    images = np.zeros((n, 8, 8, 3), dtype=np.uint8)
    images[:] = (labels * 100)[:, None, None, None]            # class = brightness
    images = np.clip(images + rng.integers(0, 20, images.shape), 0, 255).astype(np.uint8)
    from models import build_embedder

    feats = build_embedder("pixels")(images)
    cache = ArtifactCache(str(tmp_path))
    fkey = cache.key("embed", 1, t="features")
    save_table(cache, fkey, features=feats)
    from models.classifier import save_classifier, train_classifier

    clf = tmp_path / "clf.pt"
    save_classifier(train_classifier(images, labels, 3, steps=30, batch_size=32), clf)
    cfeats = build_embedder("classifier", weights=str(clf))(images)
    metric_keys = ("fd", "prdc", "vendi", "memorization", "cluster_coverage")
    ec = EvalConfig(embedders=("pixels", "classifier"), primary="classifier", num_real=90,
                    metrics=metric_keys)
    fake = images[labels == 0][:30]                             # generated: only class 0
    subset = np.arange(0, n, 2)
    ref = np.sort(rng.choice(n, 90, replace=False))             # stands in for held-out images
    reference = {"pixels": feats[ref], "classifier": cfeats[ref]}
    metrics = evaluate(fake, {"pixels": Table(cache, fkey).column("features"), "classifier": cfeats},
                       labels, subset, ec, seed=0, num_classes=3, device="cpu",
                       weights={"classifier": str(clf)}, reference=reference,
                       reference_labels=labels[ref])
    assert "fd" not in metrics and "fd_pixels" in metrics and "fd_cls" in metrics
    for short in ("pixels", "cls"):
        assert {f"f_score_{short}", f"vendi_{short}", f"mem_nn_mean_{short}",
                f"cov_kl_uniform_{short}"} <= set(metrics)
        shares = {k: v for k, v in metrics.items()
                  if k.startswith("cov_share_") and k.endswith(f"_{short}")}
        assert len(shares) == 3 and max(shares.values()) == 1.0    # every sample: class 0
    assert all(np.isfinite(v) for v in metrics.values())
    # each space alone gives the same numbers under its suffix (one loop, no cross-talk)
    for name, short, feats in (("pixels", "pixels", feats), ("classifier", "cls", cfeats)):
        one = evaluate(fake, {name: feats}, labels, subset,
                       EvalConfig(embedders=(name,), primary=name, num_real=90, metrics=metric_keys),
                       seed=0, num_classes=3, device="cpu", weights={"classifier": str(clf)},
                       reference={name: reference[name]}, reference_labels=labels[ref])
        assert one == {k: v for k, v in metrics.items()       # (pixels alone: no classifier
                       if (k.endswith(f"_{short}") or k.startswith("subset_share_"))  # to agree
                       and k != "cov_label_agreement_pixels"}                          # with)
    # the subset's own class shares (every second image of 3 equal blocks of 40): by hand
    assert [metrics[f"subset_share_{c}"] for c in range(3)] == [20 / 60] * 3
    # the classifier's own predicted class of each sample, beside the nearest-neighbour label
    pred = build_embedder("classifier", weights=str(clf)).predict(fake)
    for c in range(3):
        assert metrics[f"cov_pred_share_{c}_cls"] == float((pred == c).mean())
    for short in ("cls", "pixels"):                      # every NN label is class 0
        assert metrics[f"cov_label_agreement_{short}"] == float((pred == 0).mean())
    assert not any(k.startswith("cov_pred_share") and k.endswith("_pixels") for k in metrics)
    # fd_cls is the Frechet distance of the classifier features, computed here in float64
    from scipy import linalg

    real = cfeats[ref].astype(np.float64)
    gen = build_embedder("classifier", weights=str(clf))(fake).astype(np.float64)
    mu1, mu2 = real.mean(0), gen.mean(0)
    c1, c2 = np.cov(real, rowvar=False), np.cov(gen, rowvar=False)
    fd = ((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real)
    assert metrics["fd_cls"] == pytest.approx(fd, rel=1e-3)


def test_centroid_distance_uses_seeded_centres_of_the_full_training_set():
    """eval.centroids_k: mem_centroid_nn_mean_<space> is the mean distance (L2-normalized
    features, float64 brute force here) of the samples to k-means centres of the FULL
    training set, the same centres for every subset; absent when centroids_k is 0."""
    from models import build_embedder
    from orchestrator.config import EvalConfig
    from orchestrator.training.evaluate import CENTROID_SEED, evaluate_space, training_centroids

    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(4), 30).astype(np.int64)
    images = rng.integers(0, 40, (120, 8, 8, 3)).astype(np.uint8)
    for c in range(4):                                   # class c: quadrant c is bright
        images[labels == c, 4 * (c // 2):4 * (c // 2) + 4, 4 * (c % 2):4 * (c % 2) + 4] += 200
    emb = build_embedder("pixels")
    feats, fake = emb(images), images[::7]
    ec = EvalConfig(embedders=("pixels",), metrics=("memorization",), centroids_k=4)
    got = {s: evaluate_space(fake, emb, feats, labels, sub, ec, 0, 4, reference=feats[:20])
           for s, sub in (("a", np.arange(0, 120, 2)), ("b", np.arange(60)))}
    centres = training_centroids(feats, 4)
    assert centres.shape == (4, feats.shape[1])
    assert CENTROID_SEED not in range(100)            # never an experiment seed the methods use
    np.testing.assert_array_equal(centres, training_centroids(feats, 4))     # seeded
    unit = feats.astype(np.float64) / np.linalg.norm(feats.astype(np.float64), axis=1, keepdims=True)
    # one centre per class (4 well-separated classes)
    assert sorted(np.argmin(((unit[:, None] - centres[None]) ** 2).sum(-1), axis=1)[::30].tolist()) \
        == [0, 1, 2, 3]
    f = emb(fake).astype(np.float64)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    c = centres.astype(np.float64) / np.linalg.norm(centres.astype(np.float64), axis=1, keepdims=True)
    brute = np.sqrt(((f[:, None] - c[None]) ** 2).sum(-1)).min(1).mean()
    for m in got.values():
        assert m["mem_centroid_nn_mean_pixels"] == pytest.approx(brute, rel=1e-5)
    # independent: 4 well-separated classes, so the k-means centres are the class means of
    # the L2-normalized features (float64 numpy), in some order
    means = np.stack([unit[labels == c].mean(0) for c in range(4)])
    gap = np.sqrt(((centres[:, None].astype(np.float64) - means[None]) ** 2).sum(-1))
    assert gap.min(1).max() < 1e-5 and sorted(gap.argmin(1).tolist()) == [0, 1, 2, 3]
    # centres handed in (the sweep computes them once per dataset) give the same metric
    given = evaluate_space(fake, emb, feats, labels, np.arange(60), ec, 0, 4,
                           reference=feats[:20], centroids=centres)
    assert given["mem_centroid_nn_mean_pixels"] == got["b"]["mem_centroid_nn_mean_pixels"]
    off = evaluate_space(fake, emb, feats, labels, np.arange(60), EvalConfig(
        embedders=("pixels",), metrics=("memorization",)), 0, 4, reference=feats[:20],
        centroids=centres)
    assert not any(k.startswith("mem_centroid") for k in off)


def test_sweep_computes_the_centroids_once_per_dataset(tmp_path):
    """ensure_centroids caches training_centroids of each space's full training features
    under a key of (features, k); a second call reuses it; none when centroids_k is 0."""
    from types import SimpleNamespace

    from orchestrator.config import EvalConfig
    from orchestrator.stages.sweep import ensure_centroids
    from orchestrator.storage.cache import ArtifactCache
    from orchestrator.training.evaluate import training_centroids

    cache = ArtifactCache(str(tmp_path))
    feats = np.random.default_rng(0).standard_normal((50, 6)).astype(np.float32)
    fkey = cache.key("features", 1, x=1)
    save_table(cache, fkey, features=feats)
    art = SimpleNamespace(embeddings={"pixels": fkey})
    cfg = SimpleNamespace(eval=EvalConfig(embedders=("pixels",), metrics=("memorization",),
                                          centroids_k=3))
    keys = ensure_centroids(cache, cfg, art)
    np.testing.assert_array_equal(cache.load_arrays(keys["pixels"])["centroids"],
                                  training_centroids(feats, 3))
    assert ensure_centroids(cache, cfg, art) == keys
    path = next((tmp_path / "centroids").glob("*.npz"))
    mtime = path.stat().st_mtime_ns
    ensure_centroids(cache, cfg, art)
    assert path.stat().st_mtime_ns == mtime                      # reused
    ensure_centroids(cache, cfg, art, fresh=True)
    assert path.stat().st_mtime_ns != mtime                      # --fresh rewrites it
    cfg.eval = EvalConfig(embedders=("pixels",), metrics=("memorization",))
    assert ensure_centroids(cache, cfg, art) == {}


def test_scores_use_per_dataset_params(tmp_path):
    """paper.yaml clusters CelebA-HQ with k=24 and ImageNet with k=1000 under one label."""
    from orchestrator.config import MethodConfig
    from orchestrator.stages.score import DatasetArtifacts, ensure_scores
    from orchestrator.storage.cache import ArtifactCache

    cache = ArtifactCache(str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    lat_key, emb_key = cache.key("latents", 1, t="x"), cache.key("embed", 1, t="x")
    save_table(cache, lat_key, latent=np.zeros((60, 4, 2, 2), np.float32),
               label=np.zeros(60, np.int64))
    save_table(cache, emb_key, features=rng.normal(size=(60, 8)).astype(np.float32))
    method = MethodConfig(name="clustering", label="clustering",
                          params={"embedder": "pixels", "k": 3},
                          per_dataset={"big": {"k": 7}})
    for name, k in (("small", 3), ("big", 7)):
        art = DatasetArtifacts(name, f"fp-{name}", 1, "vq", lat_key, {"pixels": emb_key}, None)
        key, pruner = ensure_scores(cache, method, 0, art, fresh=False)
        assert pruner.params["k"] == k
        assert cache.load_json(key)["params"]["k"] == k
        assert len(np.unique(cache.load_arrays(key)["groups"])) == k


def test_stale_ray_address_file_is_not_joined(tmp_path, monkeypatch):
    """A dead `ray start` head's address file must not make init_ray wait forever."""
    import socket

    from orchestrator.runtime.workarounds import live_local_head as _live_local_head

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    assert not _live_local_head()                      # no address file
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        (tmp_path / "ray").mkdir()
        (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}")
        assert _live_local_head()                      # a head that answers is joined
    assert not _live_local_head()                      # the same address once it died


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_a_local_instance_gets_a_private_address_file(monkeypatch):
    """Another run's Ray on the machine must never see (or be seen by) this instance."""
    import ray

    from orchestrator.runtime.cluster import init_ray

    shared = Path("/tmp/ray/ray_current_cluster")
    before = shared.read_text() if shared.exists() else None
    monkeypatch.setenv("RAY_ADDRESS", "local")
    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    assert init_ray() is True
    try:
        private = Path(os.environ["RAY_TMPDIR"])
        assert private.name.startswith("pdray-")
        address = ray.get_runtime_context().gcs_address
        assert (private / "ray" / "ray_current_cluster").read_text().strip() == address
        assert (shared.read_text() if shared.exists() else None) == before

        @ray.remote
        def unraisable_hook() -> str:
            import sys
            return sys.unraisablehook.__name__

        # every worker starts with runtime.worker_setup (tests/test_worker_sigterm.py)
        assert ray.get(unraisable_hook.remote()) == "exit_on_swallowed_exit"
    finally:
        ray.shutdown()


def test_weight_settings_reach_the_workers_without_clashing_with_a_job(monkeypatch):
    """init_ray forwards the weight variables (HF cache, endpoint, offline) as the job's
    env_vars, minus those a submitted job's runtime_env sets (Ray raises on a clash)."""
    import json

    from models.weights import weights_env
    from orchestrator.runtime.workarounds import driver_env_vars

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/mirror")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    env = weights_env()
    assert env["HF_ENDPOINT"] == "http://127.0.0.1:9/mirror" and env["HF_HUB_OFFLINE"] == "1"
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert driver_env_vars(env) == env
    job = {"runtime_env": {"env_vars": {"HF_HUB_OFFLINE": "1"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    assert driver_env_vars(env) == {k: v for k, v in env.items() if k != "HF_HUB_OFFLINE"}
