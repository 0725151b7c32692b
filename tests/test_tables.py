"""Sharded tables (orchestrator/storage/tables.py) and the skipped-rows check of the
encode stage: no Ray, a local cache."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import numpy as np
import pytest

from orchestrator.errors import SourceError
from orchestrator.storage.cache import ArtifactCache
from orchestrator.storage.tables import Table, finish_table, write_part
from tests.table_helpers import save_table


def _cache(tmp_path) -> ArtifactCache:
    return ArtifactCache(str(tmp_path / "cache"))


def test_round_trip_keeps_shapes_strings_and_id_order(tmp_path):
    cache = _cache(tmp_path)
    rng = np.random.default_rng(0)
    ids = rng.permutation(1000)[:40].astype(np.int64)            # sparse, unordered ids
    lat = rng.standard_normal((40, 4, 3, 3)).astype(np.float32)
    keys = np.array([f"cls{i % 3}/img {i}.png" for i in ids], dtype=object)
    save_table(cache, "latents/abc", parts=3, id=ids, latent=lat, key=keys,
               label=(ids % 5).astype(np.int64), meta={"num_classes": 5})
    t = Table(cache, "latents/abc")
    assert t.rows == 40 and len(t.parts) == 3 and t.meta == {"num_classes": 5}
    assert t.shape("latent") == (4, 3, 3) and t.shape("key") == ()
    got = t.read(["latent", "key", "label"])
    order = np.argsort(ids)
    np.testing.assert_array_equal(got["id"], ids[order])
    np.testing.assert_array_equal(got["latent"], lat[order])    # bit-exact float32
    assert got["latent"].dtype == np.float32
    assert list(got["key"]) == list(keys[order])
    np.testing.assert_array_equal(got["label"], ids[order] % 5)
    # parts one at a time give the same rows
    rows = sum(len(p["id"]) for p in t.iter_parts(["latent"]))
    assert rows == 40


def test_read_by_ids_reads_only_the_parts_it_needs(tmp_path, monkeypatch):
    cache = _cache(tmp_path)
    metas = [write_part(cache, "embed/x", f"p{i}",
                        {"id": np.arange(i * 10, i * 10 + 10),
                         "features": np.full((10, 2), i, np.float32)}) for i in range(4)]
    finish_table(cache, "embed/x", metas)
    t = Table(cache, "embed/x")
    loaded = []
    real = Table._load
    monkeypatch.setattr(Table, "_load", lambda self, part, cols: loaded.append(part["name"])
                        or real(self, part, cols))
    got = t.read(["features"], ids=np.array([35, 31, 12]))
    np.testing.assert_array_equal(got["id"], [12, 31, 35])
    np.testing.assert_array_equal(got["features"][:, 0], [1, 3, 3])
    assert loaded == ["p1", "p3"]
    with pytest.raises(KeyError, match="1 id"):
        t.read(["features"], ids=np.array([5, 40]))


def test_incomplete_and_inconsistent_tables(tmp_path):
    cache = _cache(tmp_path)
    meta = write_part(cache, "t/a", "p0", {"id": np.arange(3), "x": np.zeros((3, 2))})
    assert not Table.exists(cache, "t/a")                         # no index yet
    with pytest.raises(ValueError, match="duplicate"):
        finish_table(cache, "t/a", [meta, meta])
    other = write_part(cache, "t/a", "p1", {"id": np.arange(3, 6), "x": np.zeros((3, 4))})
    with pytest.raises(ValueError, match="shape"):
        finish_table(cache, "t/a", [meta, other])
    with pytest.raises(ValueError, match="'id'"):
        write_part(cache, "t/a", "p2", {"x": np.zeros(3)})
    finish_table(cache, "t/a", [meta])
    assert Table.exists(cache, "t/a") and Table(cache, "t/a").rows == 3


def _cfg(tmp_path, max_skipped=0.01):
    return SimpleNamespace(experiment=SimpleNamespace(output_dir=str(tmp_path / "out")),
                           data=SimpleNamespace(max_skipped=max_skipped))


def test_skipped_rows_are_listed_and_bounded(tmp_path):
    from orchestrator.stages.encode import check_skipped

    ds = SimpleNamespace(name="mine")
    skipped = [["a/broken.png", "corrupt image: truncated"], ["b/empty.jpg", "zero-byte file"]]
    path = tmp_path / "out" / "data" / "mine" / "skipped.csv"
    check_skipped(_cfg(tmp_path), ds, {"count": 600, "skipped": skipped})   # 2 of 602: 0.3%
    with open(path) as f:
        assert list(csv.reader(f)) == [["key", "reason"], *skipped]
    with pytest.raises(SourceError, match=r"2 of 602 rows .* data.max_skipped 0.001"):
        check_skipped(_cfg(tmp_path, 0.001), ds, {"count": 600, "skipped": skipped})
    assert path.exists()                                          # listed before it stops
    check_skipped(_cfg(tmp_path), ds, {"count": 10, "skipped": []})
    assert path.read_text().strip() == "key,reason"               # a clean run: header only
