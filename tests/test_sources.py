"""Data sources: IDX reader, resizing, subsets (limit, skew), fingerprints, Fashion-MNIST."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_fmnist, write_idx
from orchestrator.config import DatasetConfig
from orchestrator.data.images import read_idx, resize_batch
from orchestrator.data.sources import (FASHION_MNIST_DIR, SourceError, check_dataset, load_arrays,
                                  select_subset)


def fm(path: Path | str, **kw) -> DatasetConfig:
    return DatasetConfig(name="f", source="fashion_mnist", path=str(path), **kw)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_roundtrip(tmp_path: Path, compress: bool):
    arr = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    p = write_idx(tmp_path / "a.idx", arr, compress=compress)
    out = read_idx(p)
    assert out.dtype == np.uint8 and out.shape == (7, 5, 3)
    np.testing.assert_array_equal(out, arr)


def test_idx_errors(tmp_path: Path):
    arr = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    raw = write_idx(tmp_path / "a.idx", arr, compress=False).read_bytes()
    (tmp_path / "short").write_bytes(raw[:-7])
    with pytest.raises(ValueError, match="truncated IDX data"):
        read_idx(tmp_path / "short")
    (tmp_path / "short.gz").write_bytes(gzip.compress(raw[:10]))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short.gz")
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(tmp_path / "png")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(raw)[:-30])
    with pytest.raises(ValueError, match="corrupt gzip|truncated"):
        read_idx(tmp_path / "cut.gz")


@pytest.mark.parametrize("size", [32, 20, 14, 64])
def test_resize_matches_pil_bilinear(size: int):
    x = np.random.default_rng(1).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    ours = resize_batch(x, size)
    pil = np.stack([np.asarray(Image.fromarray(i).resize((size, size), Image.BILINEAR))
                    for i in x])
    assert ours.shape == (6, size, size) and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - pil).max() <= 1  # PIL rounds its fixed-point weights


def test_resize_keeps_channels_and_constants():
    x = np.full((2, 8, 8, 3), 77, np.uint8)
    assert np.all(resize_batch(x, 32) == 77) and resize_batch(x, 32).shape == (2, 32, 32, 3)


def test_fashion_mnist_arrays(fmnist_dir: Path):
    a = load_arrays(fm(fmnist_dir, split="train", resolution=32))
    assert a.images.shape == (200, 32, 32, 3) and a.images.dtype == np.uint8
    assert np.array_equal(a.images[..., 0], a.images[..., 2])        # grey -> RGB
    np.testing.assert_array_equal(a.ids, np.arange(200))
    raw_labels = read_idx(fmnist_dir / "train-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(a.labels, raw_labels)
    assert a.labels.dtype == np.int64 and a.num_classes == 10 and a.skipped == ()
    raw = read_idx(fmnist_dir / "train-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(a.images[:, :, :, 1], resize_batch(raw, 32))
    t = load_arrays(fm(fmnist_dir, split="test", resolution=28))
    assert t.images.shape == (50, 28, 28, 3)
    np.testing.assert_array_equal(t.images[..., 0],
                                  read_idx(fmnist_dir / "t10k-images-idx3-ubyte.gz"))


def test_fingerprint_tracks_content_and_settings(fmnist_dir: Path, tmp_path: Path):
    base = load_arrays(fm(fmnist_dir, limit=50)).fingerprint
    assert load_arrays(fm(fmnist_dir, limit=50)).fingerprint == base
    assert load_arrays(fm(fmnist_dir, limit=50, resolution=16)).fingerprint != base
    assert load_arrays(fm(fmnist_dir, limit=51)).fingerprint != base
    assert load_arrays(fm(fmnist_dir, limit=50, seed=1)).fingerprint != base
    other = make_fmnist(tmp_path / "other", seed=5)   # same sizes, other pixels
    assert load_arrays(fm(other, limit=50)).fingerprint != base
    # the same bytes in another directory are the same data
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in fmnist_dir.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    assert load_arrays(fm(copy, limit=50)).fingerprint == base


def test_limit_is_deterministic_and_seeded(fmnist_dir: Path):
    a = load_arrays(fm(fmnist_dir, limit=37))
    b = load_arrays(fm(fmnist_dir, limit=37))
    c = load_arrays(fm(fmnist_dir, limit=37, seed=3))
    assert len(a.ids) == 37 and np.all(np.diff(a.ids) > 0)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.ids, c.ids)
    full = load_arrays(fm(fmnist_dir))
    np.testing.assert_array_equal(a.images, full.images[a.ids])   # ids index the source
    assert len(load_arrays(fm(fmnist_dir, limit=10_000)).ids) == 200


def test_skew_proportions():
    labels = np.repeat(np.arange(10), 100)
    ds = DatasetConfig(name="s", source="digits", skew={"0": 1.0, "*": 0.1})
    keep = select_subset(labels, ds)
    counts = np.bincount(labels[keep], minlength=10)
    assert counts[0] == 100 and np.all(counts[1:] == 10)            # 10x more frequent
    ds2 = DatasetConfig(name="s", source="digits", skew={"3": 0.25, "7": 0.0})
    counts2 = np.bincount(labels[select_subset(labels, ds2)], minlength=10)
    assert counts2[3] == 25 and counts2[7] == 0 and counts2[0] == 100
    # skew, then limit: uniform on the skewed set, deterministic
    ds3 = DatasetConfig(name="s", source="digits", skew={"0": 1.0, "*": 0.1}, limit=95)
    k3 = select_subset(labels, ds3)
    assert len(k3) == 95 and set(k3) <= set(keep)
    np.testing.assert_array_equal(k3, select_subset(labels, ds3))


def test_skewed_fashion_mnist(fmnist_dir: Path):
    a = load_arrays(fm(fmnist_dir, skew={"0": 1.0, "*": 0.1}))
    counts = np.bincount(a.labels, minlength=10)
    assert counts[0] == 20 and np.all(counts[1:] == 2)


def test_digits_source():
    ds = DatasetConfig(name="d", source="digits", resolution=24, limit=30)
    a = load_arrays(ds)
    assert a.images.shape == (30, 24, 24, 3) and a.num_classes == 10
    assert a.images.max() > 200 and a.images.min() == 0            # 0..16 scaled to 0..255
    assert check_dataset(ds, "data.datasets[0]") == 30


def test_missing_and_corrupt_fashion_mnist(tmp_path: Path, fmnist_dir: Path):
    with pytest.raises(SourceError, match="no train-images-idx3-ubyte"):
        load_arrays(fm(tmp_path))
    img = fmnist_dir / "train-images-idx3-ubyte.gz"
    img.write_bytes(gzip.compress(gzip.decompress(img.read_bytes())[:-100]))
    with pytest.raises(SourceError, match="truncated IDX data"):
        load_arrays(fm(fmnist_dir))


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR, "train-labels-idx1-ubyte.gz").exists(),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_subset():
    a = load_arrays(fm(FASHION_MNIST_DIR, limit=500, resolution=32))
    assert a.images.shape == (500, 32, 32, 3) and a.num_classes == 10
    assert check_dataset(fm(FASHION_MNIST_DIR, split="train"), "d") == 60_000
    from orchestrator.data.sources import reference_count

    assert reference_count(fm(FASHION_MNIST_DIR), 12_000) == 10_000   # the whole test split


def test_keys_and_uris_of_the_array_sources(fmnist_dir: Path):
    from orchestrator.data.sources import load_reference

    a = load_arrays(fm(fmnist_dir, limit=5))
    assert list(a.keys) == [f"train/{i}" for i in a.ids]
    assert list(a.uris) == [f"{fmnist_dir}/train-images-idx3-ubyte.gz#{i}" for i in a.ids]
    ref = load_reference(fm(fmnist_dir), cap=3)
    assert list(ref.keys) == [f"test/{i}" for i in ref.ids]
    d = load_arrays(DatasetConfig(name="d", source="digits", resolution=8, limit=4))
    assert list(d.keys) == [f"digits/{i}" for i in d.ids]
    assert list(d.uris) == [f"sklearn:digits#{i}" for i in d.ids]


def test_data_max_skipped_and_the_streaming_fields(tmp_path: Path):
    from conftest import minimal_config
    from orchestrator.config import ConfigError, config_from_dict

    def load(data: dict):
        return config_from_dict(minimal_config(data=data), base_dir=tmp_path, check=False)

    digits = [{"name": "d", "source": "digits"}]
    assert load({"datasets": digits}).data.max_skipped == 0.01
    assert load({"datasets": digits, "max_skipped": 0}).data.max_skipped == 0.0
    for bad, message in ((1.5, r"data\.max_skipped: .*\[0, 1\], got 1\.5"),
                         ("x", r"data\.max_skipped: expected a number"),
                         (-0.1, r"data\.max_skipped: .*\[0, 1\]")):
        with pytest.raises(ConfigError, match=message):
            load({"datasets": digits, "max_skipped": bad})
    with pytest.raises(ConfigError, match=r"data\.colour: unknown key \(valid: datasets, "
                                          r"max_skipped\)"):
        load({"datasets": digits, "colour": 1})
    entry = {"name": "p", "source": "parquet", "path": "s3://b/x/*.parquet",
             "image_column": "jpg", "label_column": "label", "key_column": "id"}
    ds = load({"datasets": [entry]}).data.datasets[0]
    assert (ds.image_column, ds.label_column, ds.key_column) == ("jpg", "label", "id")
    assert load({"datasets": digits}).data.datasets[0].image_column == "image"


def test_remote_folder_counts_from_a_bounded_listing(tmp_path: Path, monkeypatch):
    """A small s3:// folder is counted and checked at check time; a big one (more than
    MAX_COUNTED objects, lowered here) says it is counted at run time, in the dry-run too."""
    pytest.importorskip("moto.server", reason="moto[server] is in the dev extras")
    from conftest import minimal_config
    from orchestrator import sizing
    from orchestrator.config import config_from_dict, describe_references
    from orchestrator.data import listing
    from orchestrator.data.sources import count_note
    from tests.s3_helpers import local_s3

    with local_s3("count-bkt"):
        import pyarrow.fs as pafs

        fs, _ = pafs.FileSystem.from_uri("s3://count-bkt/x")
        rng = np.random.default_rng(0)
        for i in range(20):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)).save(buf, "PNG")
            with fs.open_output_stream(f"count-bkt/imgs/{i:02d}.png") as f:
                f.write(buf.getvalue())
        with fs.open_output_stream("count-bkt/imgs/.DS_Store") as f:
            f.write(b"x")
        ds = DatasetConfig(name="s3imgs", source="image_folder", path="s3://count-bkt/imgs")
        assert listing.bounded_count("s3://count-bkt/imgs") == (20, "")
        assert check_dataset(ds, "data.datasets[0]") == 18          # 2 held out
        from orchestrator.data.sources import reference_count

        assert reference_count(ds, 100) == 2
        monkeypatch.setattr(listing, "MAX_COUNTED", 5)
        assert check_dataset(ds, "data.datasets[0]") is None
        note = count_note(ds)
        assert note == "more than 5 objects under s3://count-bkt/imgs: counted at run time"
        raw = minimal_config(data={"datasets": [{"name": "s3imgs", "source": "image_folder",
                                                 "path": "s3://count-bkt/imgs"}]},
                             pruning={"ratios": [0.5], "methods": [{"name": "random"}]})
        cfg = config_from_dict(raw, base_dir=tmp_path, check=False)
        works = [e.work for e in sizing.estimate(cfg, table=[]) if e.scope == "s3imgs"]
        assert works and all(w == f"image count {note}" for w in works)
        assert "(counted at run time)" in describe_references(cfg)
    assert "counted at run time" in listing.bounded_count("gs://bkt/imgs")[1]
