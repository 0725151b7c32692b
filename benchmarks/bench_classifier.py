"""Benchmark: the evaluation classifier (models/classifier.py) on Fashion-MNIST.

Trains on the first N training images (28x28 gray, bilinear-resized to 32x32 and
repeated to RGB as the fashion_mnist source does) and reports the held-out test
accuracy on all 10,000 test images, with training wall and CPU seconds and the load.

    .venv/bin/python -m benchmarks.bench_classifier [--n 3000 10000] [--steps S] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._util import header
from models.classifier import classifier_accuracy, train_classifier
from orchestrator.data.images import gray_to_rgb, read_idx, resize_batch

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def to_rgb32(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8 -> (N, 32, 32, 3) uint8, as the fashion_mnist source preprocesses."""
    return gray_to_rgb(resize_batch(images, 32))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[3000, 10000])
    p.add_argument("--steps", type=int, default=None, help="default: train_classifier's")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    header("bench_classifier", vars(args))
    torch.set_num_threads(args.threads)
    x_tr = to_rgb32(read_idx(FMNIST / "train-images-idx3-ubyte.gz"))
    y_tr = read_idx(FMNIST / "train-labels-idx1-ubyte.gz").astype(np.int64)
    x_te = to_rgb32(read_idx(FMNIST / "t10k-images-idx3-ubyte.gz"))
    y_te = read_idx(FMNIST / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    kw = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size),
                            ("lr", args.lr)) if v is not None}
    print("| train images | steps/batch/lr | test acc (10k) | train wall s | train CPU s | load |")
    print("|---|---|---|---|---|---|")
    for n in args.n:
        wall, cpu = time.perf_counter(), time.process_time()
        model = train_classifier(x_tr[:n], y_tr[:n], 10, seed=args.seed, **kw)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        acc = classifier_accuracy(model, x_te, y_te)
        load = open("/proc/loadavg").read().split()[0]
        print(f"| {n} | {kw or 'defaults'} | {acc:.4f} | {wall:.1f} | {cpu:.1f} | {load} |",
              flush=True)


if __name__ == "__main__":
    main()
