"""The parquet source: plain and Hugging Face image columns, keys, labels, bad rows and
files, the held-out share and limit by key, config checks; the Ray path on local S3."""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from PIL import Image

from orchestrator.config import DatasetConfig
from orchestrator.data.base import key_id
from orchestrator.data.images import decode_image
from orchestrator.data.sources import SOURCES, check_dataset, count_note, load_arrays
from orchestrator.errors import ConfigError
from orchestrator.runtime.ray_sources import load_dataset, reference_data

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def png(seed: int, fmt: str = "PNG") -> bytes:
    """A small random RGB image (20x30), encoded."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def write_parquet(path: Path, rows: range, *, struct: bool = False,
                  bad: dict[int, bytes | None] | None = None, row_group_size: int = 7) -> Path:
    """Rows ``i`` of ``rows``: image ``png(i)`` (or ``bad[i]``), label ``i % 3``, name ``s<i>``;
    ``struct``: the image column as Hugging Face writes it (``{bytes, path}``)."""
    bad = bad or {}
    images = [bad[i] if i in bad else png(i) for i in rows]
    col = (pa.array([{"bytes": b, "path": f"{i}.png"} for i, b in zip(rows, images)])
           if struct else pa.array(images, pa.binary()))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"image": col, "y": pa.array([i % 3 for i in rows], pa.int64()),
                             "name": [f"s{i}" for i in rows]}), path, row_group_size=row_group_size)
    return path


@contextlib.contextmanager
def local_ray(num_cpus: int = 2) -> Iterator[Any]:
    """A private local Ray (its own short temp dir), shut down and removed afterwards."""
    ray = pytest.importorskip("ray", reason="ray is not installed")
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
             _temp_dir=tmp)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def ray_rows(data: Any) -> list[dict]:
    """Every row of a SourceData's dataset, sorted by id."""
    return sorted(data.dataset.take_all(), key=lambda r: r["id"])


def pq_cfg(path: Path | str, **kw: Any) -> DatasetConfig:
    return DatasetConfig(name="p", source="parquet", path=str(path), resolution=8, **kw)


def test_plain_bytes_with_key_and_label_columns(tmp_path: Path):
    f = write_parquet(tmp_path / "a.parquet", range(40), bad={4: b"junk", 7: None})
    ds = pq_cfg(tmp_path, key_column="name", label_column="y")
    train, ref = load_arrays(ds), SOURCES["parquet"].arrays(ds, "reference")
    for a in (train, ref):
        assert a.ids.dtype == np.int64 and np.all(np.diff(a.ids) > 0)
        assert list(a.ids) == [key_id(k) for k in a.keys]
        for k, uri, img, label in zip(a.keys, a.uris, a.images, a.labels):
            i = int(k[1:])
            assert uri == f"{f}#{i}" and label == i % 3
            np.testing.assert_array_equal(img, decode_image(png(i), 8))
    # train and the held-out share split the keys; the bad rows are listed where they fall
    good = [set(a.keys) for a in (train, ref)]
    bad = [{s.path for s in a.skipped} for a in (train, ref)]
    assert not good[0] & good[1]
    assert good[0] | good[1] | bad[0] | bad[1] == {f"s{i}" for i in range(40)}
    assert bad[0] | bad[1] == {"s4", "s7"} and 1 <= len(good[1] | bad[1]) <= 10
    reasons = {s.path: s.reason for a in (train, ref) for s in a.skipped}
    assert reasons["s7"] == "no image bytes" and reasons["s4"] == "not an image file"
    assert train.num_classes == 3 and check_dataset(ds, "data.datasets[0]") is None


def test_hf_struct_column_without_key_or_label(tmp_path: Path):
    write_parquet(tmp_path / "part" / "b.parquet", range(12), struct=True)
    (tmp_path / "part" / "_SUCCESS").write_bytes(b"")
    a = load_arrays(pq_cfg(tmp_path, holdout=0.25))
    assert a.num_classes == 0 and np.all(a.labels == -1) and a.skipped == ()
    assert all(k.startswith("part/b.parquet:") for k in a.keys) and 6 <= len(a.keys) < 12
    for k, uri, img in zip(a.keys, a.uris, a.images):
        row = int(k.split(":")[1])
        assert uri == f"{tmp_path}/part/b.parquet#{row}"
        np.testing.assert_array_equal(img, decode_image(png(row), 8))


def test_holdout_and_limit_follow_the_keys_not_the_files(tmp_path: Path):
    write_parquet(tmp_path / "one" / "all.parquet", range(60))
    write_parquet(tmp_path / "two" / "x.parquet", range(0, 25))
    write_parquet(tmp_path / "two" / "y.parquet", range(25, 60))
    one, two = pq_cfg(tmp_path / "one", key_column="name"), pq_cfg(tmp_path / "two",
                                                                  key_column="name")
    for role in ("train", "reference"):
        keys = [set(SOURCES["parquet"].arrays(d, role).keys) for d in (one, two)]
        assert keys[0] == keys[1]
    full = set(load_arrays(one).keys)
    lim = [load_arrays(pq_cfg(tmp_path / p, key_column="name", limit=9)) for p in ("one", "two")]
    assert set(lim[0].keys) == set(lim[1].keys) and len(lim[0].keys) == 9
    assert set(lim[0].keys) <= full
    other = load_arrays(pq_cfg(tmp_path / "one", key_column="name", limit=9, seed=1))
    assert set(other.keys) != set(lim[0].keys)
    fp = lim[0].fingerprint
    assert load_arrays(pq_cfg(tmp_path / "one", key_column="name", limit=9)).fingerprint == fp
    assert load_arrays(pq_cfg(tmp_path / "one", key_column="name", limit=8)).fingerprint != fp
    write_parquet(tmp_path / "one" / "all.parquet", range(61))    # the listing changed
    assert load_arrays(pq_cfg(tmp_path / "one", key_column="name", limit=9)).fingerprint != fp


def test_unreadable_file_and_missing_column_are_bad_rows(tmp_path: Path):
    write_parquet(tmp_path / "a.parquet", range(10))
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    pq.write_table(pa.table({"other": [1, 2]}), tmp_path / "c.parquet")
    a = load_arrays(pq_cfg(tmp_path, holdout=0.01))
    reasons = {s.path: s.reason for s in a.skipped}
    assert reasons["broken.parquet"].startswith("unreadable parquet file")
    assert reasons["c.parquet"] == "no column 'image' in c.parquet"
    assert len(a.keys) >= 9


@pytest.mark.parametrize("kw, key, message", [
    ({"image_column": "img"}, "image_column", "no column 'img'"),
    ({"image_column": "y"}, "image_column", "holds int64, not encoded image bytes"),
    ({"label_column": "lab"}, "label_column", "no column 'lab'"),
    ({"skew": {"0": 0.5}}, "skew", "not supported for the streaming source parquet"),
    ({"conditional": True}, "conditional", "has no labels"),
])
def test_config_checks_name_the_key(tmp_path: Path, kw: dict, key: str, message: str):
    write_parquet(tmp_path / "a.parquet", range(5))
    with pytest.raises(ConfigError, match=rf"^data\.datasets\[0\]\.{key}: .*{message}"):
        check_dataset(pq_cfg(tmp_path, **kw), "data.datasets[0]")


def test_paths_files_folders_and_globs(tmp_path: Path):
    write_parquet(tmp_path / "d" / "train-0.parquet", range(5))
    write_parquet(tmp_path / "d" / "train-1.parquet", range(5, 10))
    write_parquet(tmp_path / "d" / "test-0.parquet", range(10, 15))
    assert check_dataset(pq_cfg(tmp_path / "d" / "train-0.parquet", limit=3), "d") == 3
    assert "3 parquet file(s)" in count_note(pq_cfg(tmp_path / "d"))
    assert "2 parquet file(s)" in count_note(pq_cfg(tmp_path / "d" / "train-*.parquet"))
    keys = load_arrays(pq_cfg(tmp_path / "d" / "train-*.parquet", holdout=0.01)).keys
    assert {k.split(":")[0] for k in keys} == {"train-0.parquet", "train-1.parquet"}
    with pytest.raises(ConfigError, match=r"^d\.path: .*no \.parquet or \.pq files"):
        check_dataset(pq_cfg(tmp_path / "d" / "valid-*.parquet"), "d")
    with pytest.raises(ConfigError, match=r"^d\.path: .*not found"):
        check_dataset(pq_cfg(tmp_path / "nowhere"), "d")


@pytest.mark.ray
def test_ray_path_on_local_s3(tmp_path: Path):
    """One Ray session: limit (count known), the capped reference, bad rows kept with a
    zero image, the same keys, images and fingerprint as the in-memory path."""
    pytest.importorskip("moto.server", reason="moto[server] is in the dev extras")
    from tests.s3_helpers import local_s3

    write_parquet(tmp_path / "a.parquet", range(30), bad={3: b"junk", 11: b""})
    write_parquet(tmp_path / "b.parquet", range(30, 50), struct=True)
    with local_s3("pq-bkt"):
        import pyarrow.fs as pafs

        fs, _ = pafs.FileSystem.from_uri("s3://pq-bkt/x")
        for name in ("a.parquet", "b.parquet"):
            with fs.open_output_stream(f"pq-bkt/data/{name}") as out:
                out.write((tmp_path / name).read_bytes())
        ds = pq_cfg("s3://pq-bkt/data", key_column="name", label_column="y", limit=40)
        with local_ray():
            data = load_dataset(ds)
            rows = ray_rows(data)
            ref = reference_data(ds, cap=2)
            ref_rows = ray_rows(ref)
        arrays = load_arrays(ds)
    assert data.count == len(rows) == 40 and data.num_classes is None
    assert data.fingerprint == arrays.fingerprint
    bad = [r for r in rows if r["error"]]
    assert bad and {r["key"] for r in bad} == {"s3", "s11"} & {r["key"] for r in rows}
    assert {r["key"]: r["error"] for r in bad} == {s.path: s.reason for s in arrays.skipped}
    assert all(not r["image"].any() for r in bad)
    good = [r for r in rows if not r["error"]]
    assert [r["key"] for r in good] == list(arrays.keys)
    assert [r["uri"] for r in good] == list(arrays.uris)
    np.testing.assert_array_equal(np.stack([r["image"] for r in good]), arrays.images)
    np.testing.assert_array_equal([r["label"] for r in good], arrays.labels)
    assert ref.count == len(ref_rows) == 2
    assert not {r["key"] for r in ref_rows} & {r["key"] for r in rows}
