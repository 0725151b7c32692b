"""benchmarks.bench_quality_compute: its spec parsing, learning-rate schedule, plot and --append."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from benchmarks.bench_quality_compute import FIELDS, lr_hook, parse_spec
from benchmarks.quality_compute_plot import plot


def test_parse_spec():
    assert parse_spec("vq-f4-c4@500,1500") == ("vq-f4-c4", {}, [500, 1500])
    assert parse_spec("vq-f4-c4:base_channels=32,ch_mult=1-2@200") == (
        "vq-f4-c4", {"base_channels": 32, "ch_mult": (1, 2)}, [200])


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_lr_schedule(schedule):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    hook = lr_hook(opt, 0.5, 100, schedule)      # sets the rate of step 0 at once
    seen = [opt.param_groups[0]["lr"]]
    for done in range(1, 100):
        hook(done, 0.0)
        seen.append(opt.param_groups[0]["lr"])
    if schedule == "constant":
        assert seen == [0.5] * 100
    else:   # 5 warm-up steps to 0.5, then half a cosine to 0
        assert seen[:5] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
        assert seen[5 + 95 // 2] == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 47 / 95)))
        assert seen[-1] < 0.001 and all(a >= b for a, b in zip(seen[4:], seen[5:]))


def test_plot_draws_every_kind_of_row(tmp_path):
    path = tmp_path / "q.csv"
    rows = [{"arm": "real", "cpu_s": 0, "fd": 3, "precision": 0.8, "recall": 0.8},
            {"arm": "vq:vq-f4-c4", "autoencoder": "vq-f4-c4", "vq_steps": 500, "cpu_s": 300,
             "fd": 11, "precision": 0.9, "recall": 0.6},
            {"arm": "dit:DiT-Micro/2", "ema": 0.99, "cpu_s": 350, "fd": 30, "precision": 0.7,
             "recall": 0.2},
            {"arm": "dit:DiT-Micro/2", "ema": 0.99, "cpu_s": 400, "fd": 20, "precision": 0.75,
             "recall": 0.3},
            {"arm": "sampler", "ema": 0.99, "cpu_s": 401, "fd": 21, "precision": 0.7,
             "recall": 0.3}]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({**{k: "" for k in FIELDS}, **r})
    out = plot(str(path), str(tmp_path / "fig"))
    assert out.endswith("q.png") and (tmp_path / "fig" / "q.png").stat().st_size > 10_000


def test_autoencoder_rows_are_written_unless_appending():
    """--append trains the autoencoder for its latents but writes no row of it again."""
    from benchmarks.bench_quality_compute import Space, run_vq

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 32, 32, 3)).astype(np.uint8)
    space = Space(embed=lambda im: im.reshape(len(im), -1)[:, :8].astype(np.float32),
                  reference=rng.standard_normal((30, 8)).astype(np.float32), control=images[:12])
    for score, rows_written in ((False, 0), (True, 1)):
        rows: list = []
        models = run_vq("vq-f4-c4@1", images, space, 4, 1e-3,
                        lambda row, m: rows.append((row, m)) or m, score=score)
        assert list(models) == [1] and len(rows) == rows_written
    assert rows[0][0]["vq_steps"] == 1 and np.isfinite(rows[0][1]["fd"])
