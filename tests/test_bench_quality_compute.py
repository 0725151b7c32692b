"""benchmarks.bench_quality_compute: its spec parsing, learning-rate schedule and plot."""

from __future__ import annotations

import csv
import math

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
