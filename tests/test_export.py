"""Subset export: index.csv, one parquet file per subset, scores.parquet, MLflow logging.

The inputs are built by hand after the contract of the score/select stages: a samples
table (``orchestrator.storage.tables``), score artifacts (``ids``, ``scores``) and subset
artifacts (``ids`` + a json manifest naming its score key).
"""

from __future__ import annotations

import csv
import types
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import minimal_config
from orchestrator.config import config_from_dict
from orchestrator.stages import export
from orchestrator.storage.cache import ArtifactCache
from orchestrator.storage.tables import finish_table, write_part

N = 40


def _samples(cache: ArtifactCache) -> tuple[str, dict[int, tuple[str, str, int]]]:
    """A samples table of N rows in 3 parts, ids large and unordered within a part."""
    rng = np.random.default_rng(0)
    ids = rng.choice(1 << 40, size=N, replace=False).astype(np.int64)
    rows = {int(i): (f"cls{j % 3}/img{j:03d}.png", f"/data/cls{j % 3}/img{j:03d}.png",
                     -1 if j % 7 == 0 else j % 3) for j, i in enumerate(ids)}
    key, parts = "latents/abc", []
    for p, chunk in enumerate(np.array_split(ids, 3)):
        parts.append(write_part(cache, key, f"part-{p}", {
            "id": chunk, "key": np.array([rows[int(i)][0] for i in chunk], dtype=object),
            "uri": np.array([rows[int(i)][1] for i in chunk], dtype=object),
            "label": np.array([rows[int(i)][2] for i in chunk], dtype=np.int64),
            "latent": np.zeros((len(chunk), 2, 2, 2), np.float32)}))
    finish_table(cache, key, parts, {"count": N})
    return key, rows


def _grid(tmp_path: Path, seeds=(0,)):
    """Cache, config and the subsets of random + clustering at ratio 0.5 and the baseline."""
    cache = ArtifactCache(str(tmp_path / "cache"))
    latents, rows = _samples(cache)
    cfg = config_from_dict(minimal_config(
        experiment={"name": "t", "seeds": list(seeds), "output_dir": str(tmp_path / "out")},
        mlflow={"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}))
    ids = np.sort(np.array(list(rows), dtype=np.int64))
    subsets, truth = {}, {}
    for seed in seeds:
        for label in ("random", "clustering"):
            scores = np.random.default_rng([seed, len(label)]).normal(size=N)
            skey = f"score/{label}{seed}"
            cache.save_arrays(skey, ids=ids, scores=scores)
            kept = np.sort(np.argsort(-scores)[: N // 2])
            key = f"subset/{label}{seed}"
            cache.save_arrays(key, indices=kept, ids=ids[kept])
            cache.save_json(key, {"dataset": "digits", "method": label, "ratio": 0.5,
                                  "seed": seed, "n_total": N, "n_train": len(kept), "score": skey})
            subsets[("digits", label, 0.5, seed)] = key
            truth[(label, seed)] = dict(zip(ids.tolist(), scores.tolist()))
        key = f"subset/full{seed}"
        cache.save_arrays(key, indices=np.arange(N), ids=ids)
        cache.save_json(key, {"dataset": "digits", "method": "full", "ratio": 0.0, "seed": seed,
                              "n_total": N, "n_train": N, "score": None})
        subsets[("digits", "full", 0.0, seed)] = key
    arts = {"digits": types.SimpleNamespace(latents=latents)}
    return cache, cfg, arts, subsets, rows, truth


@pytest.mark.parametrize("ratio, tag", [(0.5, "r50"), (0.0, "r00"), (0.05, "r05"),
                                        (0.9, "r90"), (0.125, "r12.5"), (0.07, "r07"),
                                        (1.0, "r100")])
def test_ratio_tag_is_the_percent_removed(ratio, tag):
    assert export.ratio_tag(ratio) == tag
    assert export.subset_name("d", "m", ratio, 3) == f"d/m_{tag}_s3.parquet"


@pytest.mark.parametrize("max_open", [16, 1])
def test_export_writes_index_subsets_and_scores(tmp_path, monkeypatch, max_open):
    monkeypatch.setattr(export, "MAX_OPEN", max_open)
    cache, cfg, arts, subsets, rows, truth = _grid(tmp_path)
    index = export.export_subsets(cache, cfg, arts, subsets)
    out = tmp_path / "out" / "subsets"
    with open(out / "index.csv") as f:
        text = f.read()
    assert text.splitlines()[0] == "dataset,method,ratio,seed,n_total,n_kept,file"
    got = list(csv.DictReader(text.splitlines()))
    assert got == [{k: str(v) for k, v in r.items()} for r in index]
    assert [(r["method"], r["ratio"], r["n_total"], r["n_kept"], r["file"]) for r in got] == [
        ("full", "0.0", "40", "40", "digits/full_r00_s0.parquet"),
        ("random", "0.5", "40", "20", "digits/random_r50_s0.parquet"),
        ("clustering", "0.5", "40", "20", "digits/clustering_r50_s0.parquet")]
    for r in got:
        t = pq.read_table(out / r["file"])
        assert t.column_names == ["key", "uri", "label", "score"]
        key = subsets[("digits", r["method"], float(r["ratio"]), 0)]
        kept = cache.load_arrays(key)["ids"].tolist()
        by_key = {rows[i][0]: i for i in kept}
        assert sorted(t.column("key").to_pylist()) == sorted(by_key)
        for k, uri, label, score in zip(*(t.column(c).to_pylist() for c in t.column_names)):
            i = by_key[k]
            assert uri == rows[i][1]
            assert label == (None if rows[i][2] < 0 else rows[i][2])
            if r["method"] == "clustering":
                assert score == pytest.approx(truth[("clustering", 0)][i])
            else:
                assert score is None   # random draws and the baseline carry no score
    scores = pq.read_table(out / "digits" / "scores.parquet")
    assert scores.column_names == ["key", "clustering"]
    assert scores.num_rows == N
    by_key = {v[0]: i for i, v in rows.items()}
    for k, s in zip(scores.column("key").to_pylist(), scores.column("clustering").to_pylist()):
        assert s == pytest.approx(truth[("clustering", 0)][by_key[k]])


def test_several_seeds_name_score_columns_by_seed(tmp_path):
    cache, cfg, arts, subsets, _, truth = _grid(tmp_path, seeds=(0, 1))
    rows = export.export_subsets(cache, cfg, arts, subsets)
    assert len(rows) == 6 and {r["file"] for r in rows} >= {"digits/clustering_r50_s1.parquet",
                                                           "digits/full_r00_s1.parquet"}
    scores = pq.read_table(tmp_path / "out" / "subsets" / "digits" / "scores.parquet")
    assert scores.column_names == ["key", "clustering_s0", "clustering_s1"]
    assert not np.allclose(scores.column("clustering_s0").to_numpy(),
                           scores.column("clustering_s1").to_numpy())


def test_a_kept_id_missing_from_the_samples_table_is_an_error(tmp_path):
    cache, cfg, arts, subsets, _, _ = _grid(tmp_path)
    key = subsets[("digits", "full", 0.0, 0)]
    ids = cache.load_arrays(key)["ids"]
    cache.save_arrays(key, indices=np.arange(N + 1), ids=np.append(ids, ids.max() + 1))
    with pytest.raises(RuntimeError, match="full_r00_s0.parquet got 40 of 41 kept samples"):
        export.export_subsets(cache, cfg, arts, subsets)
    assert not (tmp_path / "out" / "subsets" / "index.csv").exists()   # written last


def test_export_to_s3(tmp_path):
    pytest.importorskip("moto")
    from tests.s3_helpers import bucket_keys, local_s3

    cache, cfg, arts, subsets, rows, _ = _grid(tmp_path)
    cfg = cfg.__class__(**{**cfg.__dict__, "experiment": cfg.experiment.__class__(
        name="t", seeds=(0,), output_dir="s3://bkt/run")})
    with local_s3("bkt") as env:
        index = export.export_subsets(cache, cfg, arts, subsets)
        keys = bucket_keys(env, "bkt", "run/subsets/")
        import pyarrow.fs as pafs

        fs, _ = pafs.FileSystem.from_uri("s3://bkt/run")
        t = pq.read_table("bkt/run/subsets/" + index[2]["file"], filesystem=fs)
    assert keys == {"run/subsets/index.csv", "run/subsets/digits/scores.parquet",
                    *(f"run/subsets/{r['file']}" for r in index)}
    assert t.num_rows == 20 and set(t.column("uri").to_pylist()) <= {v[1] for v in rows.values()}


def test_log_subsets_to_mlflow(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    cache, cfg, arts, subsets, _, _ = _grid(tmp_path)
    index = export.export_subsets(cache, cfg, arts, subsets)
    rid = export.log_subsets(cfg, index)
    client = MlflowClient(cfg.mlflow.tracking_uri)
    run = client.get_run(rid)
    assert run.data.tags["prunediff.role"] == "subsets" and run.info.status == "FINISHED"
    assert run.data.params["subsets_uri"].endswith("/out/subsets")
    files = {a.path for a in client.list_artifacts(rid, "subsets/digits")}
    assert files == {"subsets/digits/scores.parquet", *(f"subsets/{r['file']}" for r in index)}
    assert export.log_subsets(cfg, index) == rid             # the same config: the same run
    monkeypatch.setattr(export, "MLFLOW_MAX_BYTES", 10)      # too big: the index only
    rid2 = export.log_subsets(cfg, index, fresh=True)
    assert rid2 != rid
    assert {a.path for a in client.list_artifacts(rid2, "subsets")} == {"subsets/index.csv"}
    assert client.get_run(rid2).data.tags["prunediff.subset_files_logged"] == "false"
