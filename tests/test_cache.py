"""Artifact cache on a local pyarrow filesystem: keys, round trips, atomicity, corruption.

s3:// and gs:// cannot be reached from CI, so for them only URI parsing is tested.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from orchestrator.config import DatasetConfig
from orchestrator.storage import fsutil
from orchestrator.storage.cache import ArtifactCache, CacheMiss


@pytest.fixture(params=["path", "file-uri"])
def cache(request, tmp_path: Path) -> ArtifactCache:
    root = str(tmp_path / "c")
    return ArtifactCache(root if request.param == "path" else f"file://{root}")


def _visible(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_key_is_stable_and_content_addressed():
    k = ArtifactCache.key("embed", 1, fingerprint="abc", cfg={"b": 1, "a": [1, 2]})
    assert k.startswith("embed/") and len(k.split("/")[1]) == 64
    assert k == ArtifactCache.key("embed", 1, cfg={"a": [1, 2], "b": 1}, fingerprint="abc")
    assert k == ArtifactCache.key("embed", 1, fingerprint="abc", cfg={"a": (1, 2), "b": 1})
    assert k != ArtifactCache.key("embed", 2, fingerprint="abc", cfg={"b": 1, "a": [1, 2]})
    assert k != ArtifactCache.key("embed", 1, fingerprint="abd", cfg={"b": 1, "a": [1, 2]})
    assert k != ArtifactCache.key("encode", 1, fingerprint="abc", cfg={"b": 1, "a": [1, 2]})
    ds = DatasetConfig(name="f", source="digits")                     # dataclasses work
    assert ArtifactCache.key("s", 1, ds=ds) == ArtifactCache.key("s", 1, ds=ds)
    with pytest.raises(TypeError, match="not JSON-able"):
        ArtifactCache.key("s", 1, x=object())
    with pytest.raises(ValueError):
        ArtifactCache.key("a/b", 1)


def test_roundtrips(cache: ArtifactCache):
    k = cache.key("t", 1, x=1)
    assert not cache.has(k, "arrays")
    with pytest.raises(CacheMiss):
        cache.load_arrays(k)
    a = {"z": np.arange(12, dtype=np.float32).reshape(3, 4), "ids": np.array([3, 1], np.int64)}
    cache.save_arrays(k, **a)
    assert cache.has(k, "arrays")
    out = cache.load_arrays(k)
    assert set(out) == {"z", "ids"} and out["z"].dtype == np.float32
    np.testing.assert_array_equal(out["z"], a["z"])
    cache.save_json(k, {"n": 3, "names": ["a"]})
    assert cache.load_json(k) == {"n": 3, "names": ["a"]}
    cache.save_bytes(k, b"\x00\x01png")
    assert cache.load_bytes(k) == b"\x00\x01png"
    state = {"w": torch.randn(3, 2), "step": 5}
    cache.save_state_dict(k, state)
    back = cache.load_state_dict(k)
    assert back["step"] == 5 and torch.equal(back["w"], state["w"])
    cache.save_arrays(k, z=np.zeros(2))                               # overwrite
    assert list(cache.load_arrays(k)) == ["z"]


def test_crash_mid_write_leaves_no_visible_artifact(tmp_path: Path, monkeypatch):
    cache = ArtifactCache(str(tmp_path / "c"))
    k = cache.key("t", 1)
    real_write = cache._write
    calls = []

    def crash_in_data_write(path, data):
        calls.append(path)
        fs = cache.fs
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(f"{path}.tmp-crash") as f:   # half a temp file ...
            f.write(data[: len(data) // 2])
        raise KeyboardInterrupt                                  # ... then the process dies

    monkeypatch.setattr(cache, "_write", crash_in_data_write)
    with pytest.raises(KeyboardInterrupt):
        cache.save_arrays(k, z=np.arange(1000))
    assert not cache.has(k, "arrays")
    with pytest.raises(CacheMiss):
        cache.load_arrays(k)

    # data renamed into place, then a crash before its checksum sidecar: still missing
    def crash_before_sidecar(path, data):
        if path.endswith(".sha256"):
            raise KeyboardInterrupt
        real_write(path, data)

    monkeypatch.setattr(cache, "_write", crash_before_sidecar)
    with pytest.raises(KeyboardInterrupt):
        cache.save_arrays(k, z=np.arange(1000))
    assert not cache.has(k, "arrays")
    with pytest.raises(CacheMiss):
        cache.load_arrays(k)

    # the next run writes it properly; the crashed run's temp file is never read
    monkeypatch.setattr(cache, "_write", real_write)
    cache.save_arrays(k, z=np.arange(3))
    assert cache.has(k, "arrays") and list(cache.load_arrays(k)["z"]) == [0, 1, 2]


def test_truncated_artifact_is_detected_and_rebuilt(tmp_path: Path, caplog):
    cache = ArtifactCache(str(tmp_path / "c"))
    k = cache.key("t", 1)
    cache.save_arrays(k, z=np.arange(1000))
    path = Path(cache.path(k, "arrays"))
    path.write_bytes(path.read_bytes()[:-10])                   # truncated
    assert not cache.has(k, "arrays")
    with pytest.raises(CacheMiss):
        cache.load_arrays(k)
    cache.save_arrays(k, z=np.arange(5))                         # the rebuild
    assert list(cache.load_arrays(k)["z"]) == list(range(5))


def test_corrupt_bytes_of_the_same_size_are_detected(tmp_path: Path, caplog):
    cache = ArtifactCache(str(tmp_path / "c"))
    k = cache.key("t", 1)
    cache.save_json(k, {"a": 1})
    path = Path(cache.path(k, "json"))
    data = bytearray(path.read_bytes())
    data[2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert cache.has(k, "json")                                  # size matches ...
    with caplog.at_level("WARNING"):
        with pytest.raises(CacheMiss):                           # ... the checksum does not
            cache.load_json(k)
    assert "corrupt" in caplog.text
    assert not path.exists() and not cache.has(k, "json")        # removed for a rebuild
    cache.save_json(k, {"a": 2})                                 # the rebuild
    assert cache.load_json(k) == {"a": 2}


def test_move_failure_leaves_no_temp_file(tmp_path: Path, monkeypatch):
    cache = ArtifactCache(str(tmp_path / "c"))
    k = cache.key("t", 1)
    fs = cache.fs

    class FailingFS:
        def __getattr__(self, name):
            return getattr(fs, name)

        def move(self, src, dst):
            raise OSError("disk full")

    monkeypatch.setattr(cache, "_fs", FailingFS())
    with pytest.raises(OSError, match="disk full"):
        cache.save_bytes(k, b"abc")
    assert _visible(tmp_path / "c") == []
    assert not cache.has(k, "bytes")


@pytest.mark.parametrize("uri, expected", [
    ("s3://bucket/prefix/cache", ("s3", "bucket/prefix/cache")),
    ("gs://bucket/x/", ("gs", "bucket/x")),
    ("file:///tmp/a", ("file", "/tmp/a")),
])
def test_remote_uri_parsing_only(uri: str, expected):
    # s3/gs are not reachable here: parsing only, no filesystem is created
    assert fsutil.split_uri(uri) == expected
    cache = ArtifactCache(uri)
    assert cache.remote == (expected[0] != "file")
    assert cache.uri("t/abc", "arrays") == fsutil.join(uri, "t/abc.npz")


def test_bad_uris():
    with pytest.raises(ValueError, match="unsupported scheme"):
        ArtifactCache("ftp://host/x")
    with pytest.raises(ValueError, match="missing bucket"):
        fsutil.split_uri("s3://")
    assert fsutil.split_uri("rel/dir")[1].startswith("/")
