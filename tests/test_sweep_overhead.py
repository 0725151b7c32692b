"""benchmarks.sweep_overhead: slot time minus trial work, from records and a driver log."""

from __future__ import annotations

import json

from benchmarks import sweep_overhead as so

LOG = """[prunediff 02:07:01] q: cluster 2 CPU / 0 GPU: 1 worker(s) x 0.9 CPU per trial, 2 trial(s) at once
[prunediff 02:08:35] fmnist: encode done (94s)
[prunediff 02:10:24] fmnist: embed done: effnet_lite0 (109s)
[prunediff 02:10:52] fmnist: proxy statistics done (28s)
[prunediff 02:10:53] score+select: 15 subset(s) (1s)
[prunediff 02:18:24] sweep done (100s)
[prunediff 02:18:40] total 698s; 3/3 trials done
"""


def test_overhead_is_slot_time_minus_work(tmp_path, capsys):
    trial = tmp_path / "out" / "cache" / "trial"
    trial.mkdir(parents=True)
    for i, (tr, sa, ev) in enumerate([(20, 5, 15), (30, 5, 15), (10, 5, 5)]):
        (trial / f"{i}.json").write_text(json.dumps(
            {"timing": {"train_s": tr, "sample_s": sa, "eval_s": ev}}))
    (tmp_path / "run.log").write_text(LOG)
    assert so.main([str(tmp_path / "out"), str(tmp_path / "run.log")]) == 0
    out = capsys.readouterr().out
    # slots 100 s x 2 = 200 s; work 40 + 50 + 20 = 110 s; overhead 90 s = 45%
    assert "slot time 200 s" in out and "work 36.7 s of a 66.7 s slot" in out
    assert "30.0 s per trial = 45.0% of the slot time" in out
    assert "encode 94 s, embed 109 s, proxy 28 s, score+select 1 s, total 698 s" in out


def test_missing_inputs_are_one_line_errors(tmp_path, capsys):
    assert so.main([str(tmp_path), str(tmp_path / "x.log")]) == 2
    assert "no trial records" in capsys.readouterr().err
