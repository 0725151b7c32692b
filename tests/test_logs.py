"""Logs a person can read (issue 13): the plain-line progress of orchestrator/progress.py.

A whole run's log (no carriage-return redraws, no crash trace, a bounded length, no
doubled lines: ``tests.pipeline_helpers.assert_readable_log``) is checked on the CLI runs
on Ray that already run in the suite: every stage from scratch on Ray Data, Ray tasks and
Tune (``tests/test_s3_pipeline.py``) and a two-worker DDP sweep in Ray Train (the
worker-kill drill's rerun, ``tests/test_drill_worker_kill.py``).
"""

from __future__ import annotations


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
