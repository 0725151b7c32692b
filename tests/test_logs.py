"""Logs a person can read (issue 13): the smoke pipeline with stdout and stderr to a file
has no carriage-return redraws (progress bars), no crash trace and a bounded length;
and the plain-line progress of orchestrator/progress.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.pipeline_helpers import (REPO, SMOKE, assert_complete_table, child_env, needs_fmnist,
                                    shared_cache, smoke_overrides)

MAX_LINES = 250   # a bound, not yet measured: Ray did not start on the loaded machine (issue 13)


@pytest.mark.ray
@pytest.mark.timeout(1500)
@needs_fmnist
def test_smoke_log_file_is_readable(tmp_path, tmp_path_factory):
    cache = shared_cache(tmp_path_factory)
    log = tmp_path / "run.log"
    # train.steps=10: new trials even when another test of this session filled the cache
    cmd = [sys.executable, "-m", "orchestrator.run", str(SMOKE)]
    for a in smoke_overrides(tmp_path / "out", cache, "train.steps=10", "train.checkpoint_every=5"):
        cmd += ["--set", a]
    with open(log, "w") as f:
        p = subprocess.run(cmd, cwd=REPO, env=child_env(), stdout=f, stderr=subprocess.STDOUT,
                           timeout=1400)
    text = log.read_text(errors="replace")
    assert p.returncode == 0, text[-4000:]
    assert_complete_table(text)
    lines = text.splitlines()
    redraws = [ln for ln in text.split("\n") if "\r" in ln]
    assert not redraws, f"{len(redraws)} progress-bar redraw lines, e.g. {redraws[0][:200]!r}"
    assert "Traceback" not in text, text[text.index("Traceback") - 500:][:3000]
    assert "SIGABRT" not in text and "Mutex corrupt" not in text
    assert len(lines) <= MAX_LINES, f"{len(lines)} lines:\n" + "\n".join(lines[:400])
    assert "[prunediff" in text and "sweep done" in text
    said = [ln for ln in lines if "[prunediff" in ln]
    doubled = [a for a, b in zip(said, said[1:]) if a == b]
    assert not doubled, f"lines printed twice (Ray Train's print patch?), e.g. {doubled[0]!r}"


def test_progress_prints_a_few_lines_off_a_terminal(capsys, monkeypatch):
    from orchestrator import progress

    monkeypatch.setattr(progress, "is_terminal", lambda: False)
    seen = list(progress.progress(range(3, 103), "steps", total=103, initial=3, lines=4))
    assert seen == list(range(3, 103))
    out = capsys.readouterr()
    lines = [ln for ln in out.out.splitlines() if "steps:" in ln]
    # marks at 26, 52, 77, 103 of 103 (round(103 * i / 4))
    assert [ln.split("steps: ")[1].split(" ")[0] for ln in lines] == ["26/103", "52/103", "77/103",
                                                                       "103/103"]
    assert "\r" not in out.out + out.err
    p = progress.Progress("x", 10, disable=True)
    p.update(10)
    assert "x:" not in capsys.readouterr().out
