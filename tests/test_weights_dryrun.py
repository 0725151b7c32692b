"""--dry-run's weights lines and held-out reference warnings (orchestrator/weights.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from conftest import minimal_config
from models import EMBEDDERS
from orchestrator import run
from orchestrator.config import load_config
from orchestrator.weights import describe_weights, needed_embedders, reference_warnings
from test_weights import hf_cache_file


@pytest.fixture
def offline_env(tmp_path: Path, monkeypatch) -> dict[str, Path]:
    """Offline, an empty weights dir, DINOv2 in the HF cache; loading any file fails."""
    dirs = {"weights": tmp_path / "weights", "hf": tmp_path / "hf"}
    for d in dirs.values():
        d.mkdir()
    monkeypatch.setenv("PRUNEDIFF_WEIGHTS", str(dirs["weights"]))
    monkeypatch.setenv("HF_HUB_CACHE", str(dirs["hf"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.setattr(EMBEDDERS["inception"], "default_path",
                        tmp_path / "inception-2015-12-05.pt")
    dirs["dino"] = hf_cache_file(dirs["hf"], EMBEDDERS["dinov2"].repo_id, "model.safetensors",
                                 b"not a real network")

    def no_loading(*args, **kwargs):
        raise AssertionError("the dry-run must not load weights")

    monkeypatch.setattr(torch, "load", no_loading)
    monkeypatch.setattr(torch.jit, "load", no_loading)
    monkeypatch.setattr("safetensors.torch.load_file", no_loading)
    return dirs


def _config(write_config, clip_file: Path, **eval_cfg):
    cfg = minimal_config(
        embed={"embedders": ["pixels", "clip", "dinov2", "effnet_lite0"],
               "weights": {"clip": str(clip_file)}},
        eval={"embedders": ["inception"], "metrics": ["fd", "prdc"], **eval_cfg})
    return write_config(cfg)


def test_weights_lines_name_each_file_and_where_it_was_found(offline_env, tmp_path, write_config):
    clip = tmp_path / "clip.bin"
    clip.write_bytes(b"clip")
    cfg = load_config(str(_config(write_config, clip)))
    assert needed_embedders(cfg) == ["pixels", "clip", "dinov2", "effnet_lite0", "inception"]
    head, *lines = describe_weights(cfg)
    assert "offline" in head and str(offline_env["hf"]) in head
    got = dict(ln.strip().split(": ", 1) for ln in lines)
    assert got["pixels"] == "no weight file"
    assert got["clip"] == f"given path {clip}"
    assert got["dinov2"] == f"HF cache {offline_env['dino']}"
    assert got["effnet_lite0"].startswith("file shipped in its package: ")
    assert got["inception"].startswith("missing: put inception-2015-12-05.pt")
    assert str(offline_env["weights"] / "inception-2015-12-05.pt") in got["inception"]


def test_weights_lines_online_say_what_downloads_on_first_use(offline_env, tmp_path,
                                                             write_config, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.example")
    clip = tmp_path / "clip.bin"
    clip.write_bytes(b"clip")
    cfg = load_config(str(_config(write_config, clip)))
    got = dict(ln.strip().split(": ", 1) for ln in describe_weights(cfg)[1:])
    assert "online" in describe_weights(cfg)[0]
    assert got["inception"].startswith("will download from https://") and "on first use" in got[
        "inception"]
    assert got["dinov2"].startswith("HF cache ")
    cfg = load_config(str(write_config(minimal_config(
        embed={"embedders": ["pixels", "dinov2"]}, eval={"embedders": ["pixels"],
                                                         "metrics": ["fd"]}))))
    offline_env["dino"].unlink()
    (line,) = [ln for ln in describe_weights(cfg) if ln.strip().startswith("dinov2:")]
    assert "will download from timm/vit_small_patch14_dinov2.lvd142m" in line
    assert "via http://mirror.example" in line


def test_trained_space_has_no_file_to_find(write_config):
    cfg = load_config(str(write_config(minimal_config(
        eval={"embedders": ["classifier"], "metrics": ["fd"]}))))
    (line,) = [ln for ln in describe_weights(cfg) if ln.strip().startswith("classifier:")]
    assert "trained per dataset" in line


@pytest.mark.parametrize("size, prdc_k, spaces, want", [
    (2000, 3, ["pixels"], []),                                  # 2000 < 3072 + 1: fd warns
    (40, 5, ["effnet_lite0"], ["prdc_k = 50", "1280 feature dimensions of effnet_lite0"]),
    (400, 3, ["clip", "dinov2"], ["512 feature dimensions of clip"]),
    (512, 3, ["clip"], ["512 feature dimensions of clip"]),     # n = D: still rank D - 1
    (513, 3, ["clip"], []),
])
def test_reference_warnings(size, prdc_k, spaces, want, write_config):
    cfg = load_config(str(write_config(minimal_config(
        eval={"embedders": spaces, "metrics": ["fd", "prdc"], "prdc_k": prdc_k}))))
    got = reference_warnings(cfg, {"digits": size})
    if spaces == ["pixels"]:
        want = ["3072 feature dimensions of pixels"]
    assert len(got) == len(want) and all(w in g for w, g in zip(want, got)), got
    assert all(g.startswith("warning: digits: the held-out reference has ") for g in got)


def test_reference_warnings_follow_the_metrics_and_the_cap(write_config):
    cfg = load_config(str(write_config(minimal_config(
        eval={"embedders": ["clip"], "metrics": ["vendi"], "num_real": 20}))))
    assert reference_warnings(cfg, {"digits": 20}) == []        # neither fd nor prdc
    cfg = load_config(str(write_config(minimal_config(
        eval={"embedders": ["clip"], "metrics": ["prdc"], "num_real": 20}))))
    (line,) = reference_warnings(cfg, {"digits": None})        # unknown count: the cap
    assert "at most eval.num_real = 20 images" in line and "10 x eval.prdc_k = 30" in line


def test_dry_run_prints_weights_and_warns_without_ray(offline_env, tmp_path, write_config,
                                                      capsys, monkeypatch):
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    clip = tmp_path / "clip.bin"
    clip.write_bytes(b"clip")
    assert run.main([str(_config(write_config, clip, num_real=25)), "--dry-run"]) == 0
    assert "ray" not in sys.modules
    out, err = capsys.readouterr()
    assert f"  clip: given path {clip}" in out.splitlines()
    assert "  inception: missing: put inception-2015-12-05.pt" in out
    assert "10 x eval.prdc_k = 30" in err and "2048 feature dimensions of inception" in err
    assert out.rstrip().endswith("trials")
