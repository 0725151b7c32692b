"""Drills: bad inputs stop the run in one line before any work.

- a config that is not UTF-8 text, binary garbage, a YAML scalar, a directory, an
  ``extends`` base that is not text: exit 2, one line naming the file;
- an image folder where every file is corrupt: exit 2 with one line naming the
  folder and the count of skipped files, at ``--dry-run`` (local folders: the config
  checks probe them) and in a real run (the source probes before Ray Data, also for
  s3:// folders), within seconds.

Fast, no Ray: about 5 s per CLI subprocess on a quiet machine (up to ~60 s at load
average 50 on the shared 2 cores).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, minimal_config
from orchestrator import run
from orchestrator.config.schema import DatasetConfig
from orchestrator.data import folders
from orchestrator.data.sources import load_arrays
from orchestrator.errors import SourceError


def _cli(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]), "RAY_ADDRESS": "local"}
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "orchestrator.run", *args], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=300)
    return p, time.time() - t0


def _one_line(p: subprocess.CompletedProcess, code: int, start: str) -> None:
    assert p.returncode == code, p.stderr[-2000:]
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert p.stderr.startswith(start), p.stderr


@pytest.mark.parametrize("content, says", [
    (b"experiment:\n  name: caf\xe9\n", "not a UTF-8 text file (byte 0xe9 at offset 23)"),
    (bytes(range(256)) * 4, "not a UTF-8 text file (byte 0x80 at offset 128)"),
    (b"\x00\x01\x02garbage\x07", "invalid YAML"),
    (b"just a string\n", "expected a mapping of sections, got str"),
    (b"- a\n- b\n", "expected a mapping of sections, got list"),
])
def test_config_that_is_not_yaml_text(content, says, tmp_path: Path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_bytes(content)
    assert run.main([str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: ") and says in err, err


def test_config_base_that_is_not_text(tmp_path: Path, capsys):
    base = tmp_path / "base.yaml"
    base.write_bytes(b"\xff\xfe\x00binary")
    path = tmp_path / "cfg.yaml"
    path.write_text("extends: base.yaml\n")
    assert run.main([str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {base}: not a UTF-8 text file (byte 0xff at offset 0); " \
                  "a config must be YAML text\n"


def test_directory_as_config(tmp_path: Path, capsys):
    assert run.main([str(tmp_path), "--dry-run"]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path}: is a directory, expected a YAML "
                                       "config file\n")


@pytest.mark.e2e
def test_not_utf8_config_in_a_subprocess(tmp_path: Path):
    path = tmp_path / "cfg.yaml"
    path.write_bytes(os.urandom(64).replace(b"\n", b"") + b"\xff")  # \xff never valid UTF-8
    p, _ = _cli(str(path), cwd=tmp_path)
    _one_line(p, 2, f"error: {path}: not a UTF-8 text file")


def _corrupt_folder(root: Path, n: int) -> Path:
    rng = __import__("numpy").random.default_rng(0)
    for i in range(n):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        head = b"\x89PNG\r\n\x1a\n" if i % 3 == 0 else b"\xff\xd8\xff\xe0"   # looks like PNG/JPEG
        (sub / f"img{i:02d}.{'png' if i % 3 == 0 else 'jpg'}").write_bytes(
            head + rng.integers(0, 256, 300, dtype="uint8").tobytes())
    (root / "b" / "empty.png").write_bytes(b"")
    return root


def _folder_config(write_config, folder: Path, tmp_path: Path) -> Path:
    cfg = minimal_config()
    cfg["experiment"]["output_dir"] = str(tmp_path / "out")
    cfg["data"] = {"datasets": [{"name": "junk", "source": "image_folder", "path": str(folder),
                                 "resolution": 16, "conditional": False}]}
    cfg["pruning"] = {"ratios": [0.5], "methods": [{"name": "random"}]}
    return write_config(cfg)


@pytest.mark.e2e
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_all_corrupt_image_folder_stops_in_one_line(dry_run, tmp_path: Path, write_config):
    folder = _corrupt_folder(tmp_path / "imgs", 12)
    cfg = _folder_config(write_config, folder, tmp_path)
    p, took = _cli(str(cfg), *(["--dry-run"] if dry_run else []), cwd=tmp_path)
    _one_line(p, 2, f"error: data.datasets[0].path: no readable image in {folder}: "
                    "all 12 files skipped as unreadable (e.g. a/img01.jpg: ")  # 13 - 1 held out
    assert p.stdout == ""
    assert took < 120, took             # seconds on a quiet machine; it hung for 240 s before
    assert not (tmp_path / "out").exists()   # no lock, no cache, no Ray storage


def test_probe_counts_and_sampling(tmp_path: Path, monkeypatch):
    folder = _corrupt_folder(tmp_path / "imgs", 9)
    ds = DatasetConfig(name="junk", source="image_folder", path=str(folder), resolution=8)
    with pytest.raises(SourceError, match=r"^dataset junk: no readable image in .*: all 9 files"):
        load_arrays(ds)                      # the array path counts every file
    monkeypatch.setattr(folders, "PROBE_FILES", 4)
    with pytest.raises(SourceError, match="4 of 9 files checked, all skipped as unreadable"):
        folders.ImageFolder().probe(ds, "here")
    (folder / "empty-dir").mkdir()
    empty = DatasetConfig(name="e", source="image_folder", path=str(folder / "empty-dir"),
                          resolution=8)
    with pytest.raises(SourceError, match="no readable image in .*empty-dir: no files"):
        folders.ImageFolder().probe(empty, "here")


def test_one_good_image_passes_the_probe(tmp_path: Path):
    from PIL import Image

    folder = _corrupt_folder(tmp_path / "imgs", 5)
    Image.new("RGB", (12, 12), (200, 10, 10)).save(folder / "a" / "zgood.png")
    ds = DatasetConfig(name="junk", source="image_folder", path=str(folder), resolution=8)
    folders.ImageFolder().probe(ds, "here")
    a = load_arrays(ds)
    assert len(a.ids) == 1 and len(a.skipped) == 5   # 7 files, 1 held out as the reference


def test_all_corrupt_folder_on_s3_is_refused_before_ray_data(tmp_path: Path):
    pytest.importorskip("moto.server", reason="moto[server] is in the dev extras")
    from tests.s3_helpers import local_s3

    folder = _corrupt_folder(tmp_path / "imgs", 4)
    with local_s3("junk-imgs"):
        import pyarrow.fs as pafs

        fs, _ = pafs.FileSystem.from_uri("s3://junk-imgs/x")
        for p in folder.rglob("*"):
            if p.is_file():
                with fs.open_output_stream(f"junk-imgs/imgs/{p.relative_to(folder)}") as f:
                    f.write(p.read_bytes())
        ds = DatasetConfig(name="junk", source="image_folder", path="s3://junk-imgs/imgs",
                           resolution=8)
        with pytest.raises(SourceError, match=r"dataset junk: no readable image in "
                                              r"s3://junk-imgs/imgs: all 5 files skipped"):
            folders.ImageFolder().file_rows(ds)   # the Ray view's first step: no ray.data yet
