"""benchmarks.bench_vqvae_worker: its in-process baseline and profile helpers."""

from __future__ import annotations

import numpy as np

from benchmarks.bench_vqvae_worker import conv_share, cpu_seconds_by_process, in_process_rate


def test_in_process_rate_and_conv_share(one_torch_thread):
    images = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    for channels_last in (False, True):
        rate = in_process_rate(images, "vq-f4-c4", 2, 8, 1e-3, channels_last=channels_last)
        assert 0 < rate < 1e4
    share = conv_share("vq-f4-c4", 4, steps=2)
    assert 0.05 < share < 1.0     # a conv net: the convolutions are a real part of a step


def test_cpu_seconds_by_process_sees_this_process():
    import os

    seen = cpu_seconds_by_process()
    mine = [sec for (pid, _), sec in seen.items() if pid == os.getpid()]
    assert len(mine) == 1 and mine[0] > 0
