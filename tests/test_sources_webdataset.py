"""The webdataset source: shards written with tarfile; keys, uris, labels, the image
member chosen, bad members, samples without an image, a truncated shard, repeated keys,
globs and checks; the Ray path on a local S3 endpoint."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from orchestrator.config import DatasetConfig
from orchestrator.data.base import key_id
from orchestrator.data.images import decode_image
from orchestrator.data.sources import SOURCES, check_dataset, count_note, load_arrays
from orchestrator.runtime.ray_sources import load_dataset
from orchestrator.data.webdataset import split_member
from orchestrator.errors import ConfigError
from tests.test_sources_parquet import local_ray, png, ray_rows


def write_shard(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A tar shard with ``members`` (name, bytes), in this order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def samples(first: int, n: int, prefix: str = "") -> list[tuple[str, bytes]]:
    """Members of ``n`` good samples ``<prefix><i>``: ``png`` and ``cls`` (``i % 4``)."""
    out = []
    for i in range(first, first + n):
        out += [(f"{prefix}{i:05d}.png", png(i)), (f"{prefix}{i:05d}.cls", str(i % 4).encode())]
    return out


def wds(path: Path | str, **kw) -> DatasetConfig:
    return DatasetConfig(name="w", source="webdataset", path=str(path), resolution=8, **kw)


def test_split_member_follows_webdataset():
    assert split_member("a/b/0001.seg.png") == ("a/b/0001", "seg.png")
    assert split_member("0001.jpg") == ("0001", "jpg")
    assert split_member("README") == (None, "")


def test_shards_keys_labels_and_bad_members(tmp_path: Path):
    s0 = write_shard(tmp_path / "shards" / "s-000.tar", samples(0, 20, "d/") + [
        ("d/90000.png", b"\x89PNG\r\n\x1a\n broken"), ("d/90000.cls", b"1"),   # bad member
        ("d/90001.cls", b"2"), ("d/90001.txt", b"no image here"),            # no image
        ("d/90002.jpg", png(7, "JPEG")), ("d/90002.png", png(8)),            # jpg first
        ("d/90003.webp", png(9, "WEBP")),                                    # unlabelled
    ])
    s1 = write_shard(tmp_path / "shards" / "s-001.tar", samples(20, 20) + [
        ("00099.png", png(99)), ("00098.png", png(98)), ("00099.cls", b"3")])  # 00099 repeated
    full = write_shard(tmp_path / "tmp.tar", samples(40, 30))
    cut = full.read_bytes()
    (tmp_path / "shards" / "s-002.tar").write_bytes(cut[: len(cut) * 2 // 3])     # truncated
    full.unlink()
    ds = wds(tmp_path / "shards", holdout=0.05)
    a, ref = load_arrays(ds), SOURCES["webdataset"].arrays(ds, "reference")
    assert list(a.ids) == sorted(key_id(k) for k in a.keys)
    by_key = {k: v for x in (a, ref) for k, v in zip(x.keys, zip(x.uris, x.images, x.labels))}
    for i in range(40):
        key = f"d/{i:05d}" if i < 20 else f"{i:05d}"
        if key in by_key:
            uri, img, label = by_key[key]
            assert uri == f"{s0 if i < 20 else s1}#{key}" and label == i % 4
            np.testing.assert_array_equal(img, decode_image(png(i), 8))
    np.testing.assert_array_equal(by_key["d/90002"][1], decode_image(png(7, "JPEG"), 8))
    assert by_key["d/90003"][2] == -1
    reasons = {s.path: s.reason for x in (a, ref) for s in x.skipped}
    assert reasons["d/90000"] == "not an image file"
    assert reasons["d/90001"].startswith("no image member")
    assert reasons["00099"].startswith("key repeated in the shard")
    truncated = [k for k, r in reasons.items() if r.startswith("unreadable tar shard s-002.tar")]
    assert len(truncated) == 1 and 40 <= int(truncated[0]) < 70
    read_from_cut = [k for k in set(a.keys) | set(ref.keys) if k.isdigit() and int(k) >= 40]
    assert 5 < len(read_from_cut) < 30     # the samples before the cut are kept
    assert a.num_classes == 4 and not set(a.keys) & set(ref.keys)


def test_globs_checks_and_notes(tmp_path: Path):
    write_shard(tmp_path / "train-0.tar", samples(0, 6))
    write_shard(tmp_path / "train-1.tar", samples(6, 6))
    write_shard(tmp_path / "valid-0.tar", samples(12, 6))
    assert check_dataset(wds(tmp_path / "train-*.tar", limit=4), "d") == 4
    assert "2 shard(s)" in count_note(wds(tmp_path / "train-*.tar"))
    assert "3 shard(s)" in count_note(wds(tmp_path))
    a = load_arrays(wds(tmp_path / "train-*.tar", limit=4))
    assert len(a.keys) == 4 and all(int(k) < 12 for k in a.keys)
    again = load_arrays(wds(tmp_path / "train-*.tar", limit=4))
    assert list(again.keys) == list(a.keys) and again.fingerprint == a.fingerprint
    with pytest.raises(ConfigError, match=r"^d\.skew: not supported"):
        check_dataset(wds(tmp_path, skew={"1": 0.5}), "d")
    with pytest.raises(ConfigError, match=r"^d\.path: .*no \.tar files"):
        check_dataset(wds(tmp_path / "test-*.tar"), "d")


@pytest.mark.ray
def test_ray_path_on_local_s3(tmp_path: Path):
    """Shards in a bucket, read by Ray Data: a bad member and a sample without an image
    stay as error rows with zero images; good rows match the in-memory path."""
    pytest.importorskip("moto.server", reason="moto[server] is in the dev extras")
    from tests.s3_helpers import local_s3

    write_shard(tmp_path / "a.tar", samples(0, 15) + [("bad.png", b"")])
    write_shard(tmp_path / "b.tar", samples(15, 15) + [("none.cls", b"1")])
    with local_s3("wds-bkt"):
        import pyarrow.fs as pafs

        fs, _ = pafs.FileSystem.from_uri("s3://wds-bkt/x")
        for name in ("a.tar", "b.tar"):
            with fs.open_output_stream(f"wds-bkt/shards/{name}") as out:
                out.write((tmp_path / name).read_bytes())
        ds = wds("s3://wds-bkt/shards", holdout=0.02)
        with local_ray():
            data = load_dataset(ds)
            rows = ray_rows(data)
        arrays = load_arrays(ds)
    assert data.count is None and data.num_classes is None
    assert data.fingerprint == arrays.fingerprint
    bad = {r["key"]: r for r in rows if r["error"]}
    assert set(bad) == {"bad", "none"}
    assert bad["bad"]["error"] == "zero-byte file"
    assert bad["none"]["error"].startswith("no image member")
    assert bad["none"]["uri"] == "s3://wds-bkt/shards/b.tar#none"
    assert all(not r["image"].any() for r in bad.values())
    good = [r for r in rows if not r["error"]]
    assert [r["key"] for r in good] == list(arrays.keys) and len(good) >= 25
    assert [r["uri"] for r in good] == list(arrays.uris)
    np.testing.assert_array_equal(np.stack([r["image"] for r in good]), arrays.images)
    np.testing.assert_array_equal([r["label"] for r in good], arrays.labels)
