"""Weight files (models/weights.py): resolution order, the Hugging Face cache offline,
HF_ENDPOINT through hf_hub_download (never a socket of ours), content fingerprints."""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest

from models import EMBEDDERS, MissingWeightsError, build_embedder
from models.weights import (file_sha256, hf_cache_dir, locate_weights, resolve, weight_spec,
                            weights_env, weights_fingerprint)

DINO = EMBEDDERS["dinov2"]
CLIP = EMBEDDERS["clip"]


def hf_cache_file(cache: Path, repo_id: str, filename: str, data: bytes,
                  rev: str = "a" * 40) -> Path:
    """Lay out one file as huggingface_hub's cache does: blobs/<hash>, snapshots/<rev>/<file>
    (a link to the blob), refs/main = <rev>."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    snap = repo / "snapshots" / rev / filename
    snap.parent.mkdir(parents=True, exist_ok=True)
    snap.symlink_to(os.path.relpath(blob, snap.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    return snap


@pytest.fixture
def env(tmp_path: Path, monkeypatch) -> dict[str, Path]:
    """Empty weights dir and HF cache, online, no mirror; any raw socket fails the test."""
    dirs = {"weights": tmp_path / "weights", "hf": tmp_path / "hf"}
    for d in dirs.values():
        d.mkdir()
    monkeypatch.setenv("PRUNEDIFF_WEIGHTS", str(dirs["weights"]))
    monkeypatch.setenv("HF_HUB_CACHE", str(dirs["hf"]))
    for var in ("HF_HOME", "HF_ENDPOINT", "HF_HUB_OFFLINE", "PRUNEDIFF_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(EMBEDDERS["inception"], "default_path",
                        tmp_path / "inception-2015-12-05.pt")

    def no_socket(*args, **kwargs):
        raise AssertionError(f"a raw socket was opened: {args}")

    monkeypatch.setattr(socket, "create_connection", no_socket)
    return dirs


def fake_hub(monkeypatch, behaviour) -> list[dict]:
    """Replace huggingface_hub.hf_hub_download; returns the recorded calls."""
    calls: list[dict] = []

    def download(repo_id, filename, **kwargs):
        calls.append({"repo_id": repo_id, "filename": filename, **kwargs})
        return behaviour(repo_id, filename, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return calls


def never(*args, **kwargs):
    raise AssertionError("hf_hub_download must not be called")


def test_resolution_order_path_weights_dir_hf_cache_then_download(env, tmp_path):
    assert locate_weights("dinov2").kind == "download"
    snap = hf_cache_file(env["hf"], DINO.repo_id, "model.safetensors", b"hub")
    loc = locate_weights("dinov2")
    assert (loc.kind, loc.path) == ("hf-cache", snap) and str(snap) in loc.detail
    local = env["weights"] / DINO.filename
    local.write_bytes(b"local")
    assert (locate_weights("dinov2").kind, locate_weights("dinov2").path) == ("local", local)
    given = tmp_path / "mine.pth"
    given.write_bytes(b"given")
    assert locate_weights("dinov2", str(given)).path == given
    assert locate_weights("dinov2", str(tmp_path / "nope.pth")).kind == "missing"
    with pytest.raises(MissingWeightsError, match="not found at .*nope.pth"):
        resolve(weight_spec("dinov2"), str(tmp_path / "nope.pth"), "dinov2")


def test_hf_cache_serves_the_real_network_offline(env, monkeypatch):
    import timm
    import torch
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fake_hub(monkeypatch, never)
    src = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0)
    blob = env["hf"].parent / "model.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(blob))
    snap = hf_cache_file(env["hf"], DINO.repo_id, "model.safetensors", blob.read_bytes())
    emb = build_embedder("dinov2")
    assert emb.weights_path == snap
    torch.testing.assert_close(emb.net.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
    assert weights_fingerprint("dinov2") == hashlib.sha256(blob.read_bytes()).hexdigest()


def test_offline_without_files_names_the_place_and_downloads_nothing(env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fake_hub(monkeypatch, never)
    for name in ("clip", "dinov2"):
        loc = locate_weights(name)
        where = str(env["weights"] / EMBEDDERS[name].filename)
        assert loc.kind == "missing" and where in loc.detail
        with pytest.raises(MissingWeightsError, match="offline") as err:
            build_embedder(name)
        assert where in str(err.value)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("PRUNEDIFF_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="inception-2015-12-05.pt"):
        build_embedder("inception")   # not on the hub: urllib would be called (it is not)


def test_download_goes_through_hf_hub_download_with_the_mirror(env, monkeypatch):
    from huggingface_hub.errors import EntryNotFoundError

    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.example:8080")

    def hub(repo_id, filename, **kwargs):
        if filename == "open_clip_model.safetensors":
            raise EntryNotFoundError("404: not in this repo")
        return str(hf_cache_file(Path(kwargs["cache_dir"]), repo_id, filename, b"clip"))

    calls = fake_hub(monkeypatch, hub)
    assert "via http://mirror.example:8080" in locate_weights("clip").detail
    path = resolve(weight_spec("clip"), None, "clip")
    assert [c["filename"] for c in calls] == list(CLIP.repo_files)
    assert all(c["repo_id"] == CLIP.repo_id and c["endpoint"] == "http://mirror.example:8080"
               and Path(c["cache_dir"]) == env["hf"] and c["local_files_only"] is False
               for c in calls)
    assert path.read_bytes() == b"clip"
    assert locate_weights("clip").kind == "hf-cache"   # the next node or run finds it cached
    assert weights_fingerprint("clip") == hashlib.sha256(b"clip").hexdigest()
    assert len(calls) == 2                              # ... without another download


def test_a_failed_download_is_one_clear_error(env, monkeypatch):
    def hub(repo_id, filename, **kwargs):
        raise ConnectionError("proxy refused the connection\nmore detail")

    calls = fake_hub(monkeypatch, hub)
    with pytest.raises(MissingWeightsError, match="could not download .*ConnectionError: proxy "
                                                  "refused the connection") as err:
        build_embedder("dinov2")
    assert "\n" not in str(err.value) and len(calls) == 1
    assert str(env["weights"] / DINO.filename) in str(err.value)


def test_fingerprint_is_the_content_hash(env, tmp_path):
    a = tmp_path / "a.bin"
    a.write_bytes(b"first weights")
    first = weights_fingerprint("clip", str(a))
    assert first == hashlib.sha256(b"first weights").hexdigest()
    st = a.stat()
    a.write_bytes(b"other weights")
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert weights_fingerprint("clip", str(a)) == hashlib.sha256(b"other weights").hexdigest()
    b = tmp_path / "elsewhere.bin"
    shutil.copy(a, b)
    assert weights_fingerprint("clip", str(b)) == weights_fingerprint("clip", str(a))
    assert weights_fingerprint("pixels") is None and weights_fingerprint("classifier") is None
    with pytest.raises(MissingWeightsError):
        weights_fingerprint("clip", str(tmp_path / "missing.bin"))


def test_fingerprint_is_memoised_by_path_size_and_mtime(tmp_path, monkeypatch):
    f = tmp_path / "w.bin"
    f.write_bytes(b"x" * 1000)
    want = file_sha256(f)
    reads = []
    real_open = open

    def counting_open(path, *args, **kwargs):
        reads.append(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    assert file_sha256(f) == want and reads == []
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    assert file_sha256(f) == want and len(reads) == 1


def test_effnet_weights_ship_in_its_package(env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loc = locate_weights("effnet_lite0")
    assert loc.kind == "package" and loc.path.is_file()
    assert locate_weights("pixels").kind == "none"
    assert np.isfinite(build_embedder("pixels")(np.zeros((1, 8, 8, 3), np.uint8))).all()


def test_weights_env_lists_what_workers_need(env, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.example")
    got = weights_env()
    assert got["HF_ENDPOINT"] == "http://mirror.example"
    assert got["PRUNEDIFF_WEIGHTS"] == str(env["weights"]) and "HF_HUB_OFFLINE" not in got


def test_hf_cache_dir_follows_huggingface_hub_rules_read_now(monkeypatch, tmp_path):
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    assert hf_cache_dir() == Path.home() / ".cache/huggingface/hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hf_cache_dir() == tmp_path / "xdg/huggingface/hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hf_cache_dir() == tmp_path / "home/hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hf_cache_dir() == tmp_path / "hub"
