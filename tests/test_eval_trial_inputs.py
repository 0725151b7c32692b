"""What the trials and the report read besides the samples (issue 24 items 4, 5): the
evaluation centres' own seed, the cached training-to-training distances of the copy rate,
and the proxy-to-proxy reliability of the statistic methods' scores (checked against a
hand-ranked Spearman)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from tests.table_helpers import save_table


def test_evaluation_centres_are_not_the_selection_centres():
    """(d)'s centres use CENTROID_SEED, not the experiment seed the clustering methods run
    k-means with: on data whose k-means optimum depends on the start, seed 0 (a clustering
    method's seed-0 run) and the evaluation seed give other centres; the default is that seed."""
    from orchestrator.training.evaluate import CENTROID_SEED, training_centroids

    feats = np.random.default_rng(0).standard_normal((400, 8)).astype(np.float32)  # no clusters
    evals = training_centroids(feats, 10)
    np.testing.assert_array_equal(evals, training_centroids(feats, 10, seed=CENTROID_SEED))
    for seed in range(3):
        assert not np.allclose(evals, training_centroids(feats, 10, seed=seed), atol=1e-3)


def test_sweep_computes_the_train_nn_distances_once_per_dataset(tmp_path):
    """ensure_train_nn caches train_nn_distances of each space's full training features
    under a key of the features; a second call reuses them; none without memorization."""
    from eval.memorization import train_nn_distances
    from orchestrator.config import EvalConfig
    from orchestrator.stages.sweep import ensure_train_nn
    from orchestrator.storage.cache import ArtifactCache

    cache = ArtifactCache(str(tmp_path))
    feats = np.random.default_rng(0).standard_normal((50, 6)).astype(np.float32)
    fkey = cache.key("features", 1, x=1)
    save_table(cache, fkey, features=feats)
    art = SimpleNamespace(embeddings={"pixels": fkey})
    cfg = SimpleNamespace(eval=EvalConfig(embedders=("pixels",), metrics=("memorization",)))
    keys = ensure_train_nn(cache, cfg, art)
    np.testing.assert_array_equal(cache.load_arrays(keys["pixels"])["train_nn"],
                                  train_nn_distances(feats))
    path = next((tmp_path / "trainnn").glob("*.npz"))
    mtime = path.stat().st_mtime_ns
    assert ensure_train_nn(cache, cfg, art) == keys
    assert path.stat().st_mtime_ns == mtime                      # reused
    ensure_train_nn(cache, cfg, art, fresh=True)
    assert path.stat().st_mtime_ns != mtime                      # --fresh rewrites it
    cfg.eval = EvalConfig(embedders=("pixels",), metrics=("fd",))
    assert ensure_train_nn(cache, cfg, art) == {}


def _spearman_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the ranks (no ties in the data used here)."""
    ra, rb = np.argsort(np.argsort(a)).astype(float), np.argsort(np.argsort(b)).astype(float)
    ra -= ra.mean()
    rb -= rb.mean()
    return float((ra @ rb) / math.sqrt((ra @ ra) * (rb @ rb)))


def _method(label: str, name: str):
    from pruning import PRUNERS

    return SimpleNamespace(label=label, name=name, build_pruner=lambda ds: PRUNERS[name]())


@pytest.fixture()
def scored(tmp_path):
    """Three seeds' score artifacts of el2n (ids in another order for seed 1) and random,
    and the subsets naming them at two ratios, as build_subsets leaves them."""
    from orchestrator.storage.cache import ArtifactCache

    cache = ArtifactCache(str(tmp_path))
    rng = np.random.default_rng(0)
    ids = np.arange(100, 140, dtype=np.int64)
    base = rng.standard_normal(40)
    scores = {0: base, 1: base + 0.8 * rng.standard_normal(40),
              2: -base + 0.3 * rng.standard_normal(40)}
    subsets = {}
    for label in ("el2n", "random"):
        for seed, s in scores.items():
            skey = cache.key("score", 2, label=label, seed=seed)
            order = rng.permutation(40) if seed == 1 else np.arange(40)
            cache.save_arrays(skey, ids=ids[order], scores=s[order])
            for ratio in (0.5, 0.9):
                sub = cache.key("subset", 2, score=skey, ratio=ratio)
                cache.save_json(sub, {"method": label, "ratio": ratio, "seed": seed, "score": skey})
                subsets[("fm", label, ratio, seed)] = sub
        full = cache.key("subset", 2, method="full")
        cache.save_json(full, {"method": "full", "score": None})
        subsets[("fm", "full", 0.0, 0)] = full
    cfg = SimpleNamespace(pruning=SimpleNamespace(methods=[_method("el2n", "el2n"),
                                                           _method("random", "random")]))
    return cache, cfg, {"fm": SimpleNamespace(name="fm")}, subsets, scores


def test_proxy_to_proxy_rho_is_the_mean_over_seed_pairs(scored):
    from orchestrator.stages.score import reliability_frame, score_reliability

    cache, cfg, arts, subsets, scores = scored
    rows = score_reliability(cache, cfg, arts, subsets)
    assert [r["method"] for r in rows] == ["el2n"]          # random has no proxy statistics
    pairs = [_spearman_by_hand(scores[a], scores[b]) for a, b in ((0, 1), (0, 2), (1, 2))]
    row = rows[0]
    assert row["proxy_to_proxy_rho"] == pytest.approx(np.mean(pairs), abs=1e-12)
    assert row["proxy_to_proxy_min"] == pytest.approx(min(pairs), abs=1e-12)
    assert row["proxy_to_proxy_max"] == pytest.approx(max(pairs), abs=1e-12)
    assert row["seed_pairs"] == 3 and row["seeds"] == "0,1,2" and math.isnan(row["split_half_rho"])
    table = reliability_frame(rows)
    assert list(table["method"]) == ["el2n"]
    assert table["proxy_to_proxy_rho"].iloc[0] == row["proxy_to_proxy_rho"]
    assert table["flag"].iloc[0] == "unreliable (rho < 0.5)"   # seed 2 ranks the other way


def test_one_seed_is_not_measured(scored):
    from orchestrator.stages.score import reliability_frame, score_reliability

    cache, cfg, arts, subsets, _ = scored
    one = {k: v for k, v in subsets.items() if k[3] == 0}
    rows = score_reliability(cache, cfg, arts, one)
    assert rows[0]["seed_pairs"] == 0 and math.isnan(rows[0]["proxy_to_proxy_rho"])
    assert reliability_frame(rows)["flag"].iloc[0] == "not measured"


def test_reliability_section_renders_every_statistic_method(scored):
    """The report's reliability Markdown: one table per dataset, the flag shown; nothing
    when no configured method uses proxy statistics."""
    from types import SimpleNamespace

    from orchestrator.stages.score import reliability_section

    cache, cfg, arts, subsets, _ = scored
    md = reliability_section(cache, cfg, arts, subsets)
    assert "## Score reliability" in md and "### fm" in md
    assert "| el2n |" in md and "unreliable (rho < 0.5)" in md and "| random |" not in md
    no_stats = SimpleNamespace(pruning=SimpleNamespace(methods=[_method("random", "random")]))
    assert reliability_section(cache, no_stats, arts, subsets) == ""
