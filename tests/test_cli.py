"""CLI: exit codes, one-line errors, --dry-run output, pipeline hand-off."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from conftest import REPO, minimal_config
from orchestrator import run


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    # the checkout on PYTHONPATH: the CLI must work from any start directory
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-m", "orchestrator.run", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.e2e
def test_dry_run_prints_config_and_grid_in_a_subprocess():
    p = _cli(str(REPO / "experiments" / "paper.yaml"), "--dry-run",
             "--set", "experiment.seeds=[0,1]")
    assert p.returncode == 0, p.stderr
    assert "model: {preset: DiT-XL/2" in p.stdout or "preset: DiT-XL/2" in p.stdout
    assert p.stdout.rstrip().endswith("116 trials")        # 2 seeds x 2 datasets x (1 + 7 x 4)
    lines = p.stdout.splitlines()
    assert any(ln.split() == ["imagenet", "clustering_dino", "0.90", "1"] for ln in lines)
    assert any(ln.split() == ["celebahq", "full", "0.00", "0"] for ln in lines)


@pytest.mark.parametrize("args, message", [
    (["missing.yaml"], "error: config file not found: missing.yaml"),
    (["BAD", "--dry-run"], "error: BAD: invalid YAML (line"),
    (["GOOD", "--dry-run", "--set", "train.steps=0"], "error: train.steps: must be positive"),
    (["GOOD", "--dry-run", "--set", "pruning.ratios=[1.5]"], "error: pruning.ratios[0]:"),
    (["GOOD", "--set", "nokey"], "error: --set nokey: expected KEY=VALUE"),
])
@pytest.mark.e2e
def test_user_errors_exit_2_with_one_line(args, message, tmp_path: Path, write_config):
    good = write_config(minimal_config())
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: [unclosed\n")
    args = [str(good) if a == "GOOD" else str(bad) if a == "BAD" else a for a in args]
    message = message.replace("BAD", str(bad))
    p = _cli(*args, cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and p.stderr.startswith(message), p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""


def test_dry_run_does_not_import_ray(write_config, capsys, monkeypatch):
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    assert run.main([str(write_config(minimal_config())), "--dry-run"]) == 0
    assert "ray" not in sys.modules
    out = capsys.readouterr().out
    assert out.rstrip().endswith("3 trials")
    assert ["digits", "full", "0.00", "0"] in [ln.split() for ln in out.splitlines()]


@pytest.mark.e2e
def test_dry_run_warns_about_methods_selecting_in_an_eval_space(tmp_path: Path, write_config):
    quickstart = str(REPO / "experiments" / "quickstart.yaml")
    p = _cli(quickstart, "--dry-run", cwd=tmp_path)   # evaluated in the classifier space only
    assert p.returncode == 0, p.stderr
    assert not [ln for ln in p.stderr.splitlines() if ln.startswith("warning: method")]
    both = "eval.embedders=[classifier, pixels]"     # pixels: where clustering selects
    p = _cli(quickstart, "--dry-run", "--set", both, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    warn = [ln for ln in p.stderr.splitlines() if ln.startswith("warning: method")]
    assert warn == [f"warning: method {m} selects in evaluation space pixels: its metrics "
                    "in that space are rewarded by construction"
                    for m in ("clustering_nearest", "clustering_balanced")]
    p = _cli(quickstart, "--dry-run", "--set", both, "--set", "eval.primary=pixels", cwd=tmp_path)
    warn = [ln for ln in p.stderr.splitlines() if ln.startswith("warning: method")]
    assert warn and all(ln.endswith("so its verdict rows are marked") for ln in warn)
    p = _cli(quickstart, "--dry-run", "--set", "eval.primary=pixels", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.startswith("error: eval.primary: 'pixels' is not one")


@pytest.mark.e2e
def test_relative_output_dir_resolves_against_the_start_dir(tmp_path: Path, write_config):
    p = _cli(str(write_config(minimal_config())), "--dry-run", cwd=tmp_path)
    assert p.returncode == 0
    assert f"tracking_uri: sqlite:///{tmp_path}/out/mlflow.db" in p.stdout.replace("'", "")


@pytest.mark.parametrize("behaviour, code", [("ok", 0), ("fail", 1), ("raise", 1),
                                             ("config", 2)])
def test_pipeline_result_becomes_the_exit_code(behaviour, code, write_config, monkeypatch):
    seen = {}

    def run_pipeline(cfg, fresh, until="report"):
        seen.update(cfg=cfg, fresh=fresh, until=until)
        if behaviour == "raise":
            raise RuntimeError("boom")
        if behaviour == "config":
            raise run.ConfigError("data.datasets[0].path: gone")
        return 0 if behaviour == "ok" else 1

    fake = types.ModuleType("orchestrator.pipeline")
    fake.run_pipeline = run_pipeline
    monkeypatch.setitem(sys.modules, "orchestrator.pipeline", fake)
    assert run.main([str(write_config(minimal_config())), "--fresh"]) == code
    assert seen["fresh"] is True and seen["cfg"].experiment.name == "t"
    assert seen["until"] == "report"
