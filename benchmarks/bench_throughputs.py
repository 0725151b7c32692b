"""Throughputs behind ``--dry-run``'s cost estimate (``orchestrator/throughputs.yaml``), CPU.

Measures, on this code, each unit of work ``orchestrator/sizing.py`` counts, at the
shapes of ``--resolution`` R (default 32; the quickstart's is 16): RxR images, vq-f4-c4 ->
(4, R/4, R/4) latents, batch 64:

* ``dit_train``: DiT training steps/s (``models.transport.training_loss`` + AdamW);
* ``dit_sample``: sample-ODE-steps/s (samples x ODE steps per second, CFG 1.5, 10 classes);
* ``vqvae_train`` steps/s, ``vqvae_encode`` / ``vqvae_decode`` images/s;
* ``embed``: images/s per embedder (``models.build_embedder``; skipped without weights);
* ``classifier_train``: steps/s of the ``classifier`` evaluation space's training (batch 128);
* ``stats_loss`` / ``stats_grad``: per-sample flow losses / gradient norms (``pruning.stats``),
  sample-draws/s; gradients of all parameters (MoSo, GraNd ``all``) and of the output
  layer (GraNd's default, ``proxy.grand_params: output``).

Prints each YAML entry (device ``cpu``, per thread count) as soon as it is measured.

    .venv/bin/python -m benchmarks.bench_throughputs [--threads 1] [--iters 5] [--resolution 32]
        [--embedders pixels]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Callable

import numpy as np
import torch

from models import build_dit, build_embedder, build_vqvae, cfg_velocity_fn, sample_ode, training_loss
from models.dit import DiT
from models.transport import per_sample_flow_loss
from models.vqvae import vqvae_train_step
from pruning.stats import per_sample_grad_norms, per_sample_losses


def rate(fn: Callable[[], None], units: float, iters: int) -> float:
    """Units per second of ``fn`` after one warm-up call."""
    fn()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return units * iters / (time.perf_counter() - t0)


class Entries(list):
    """Measured entries, each printed as a YAML line as soon as it is measured."""

    def __init__(self, threads: int):
        super().__init__()
        self.threads = threads

    def append(self, item: tuple[str, dict, float]) -> None:
        super().append(item)
        kind, key, value = item
        fields = ", ".join(f"{k}: {v}" for k, v in key.items())
        print(f"- {{kind: {kind}, {fields}, device: cpu, threads: {self.threads}, per_s: {value:.4g}}}",
              flush=True)


def _classifier_file(images: np.ndarray) -> str:
    """A classifier-space file (one training step: the space is trained per dataset, and an
    untrained network of the same shape costs the same to run)."""
    import tempfile

    from models.classifier import save_classifier, train_classifier

    path = os.path.join(tempfile.mkdtemp(prefix="pd_throughputs_"), "classifier.pt")
    save_classifier(train_classifier(images, np.arange(len(images)) % 10, 10, steps=1), path)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--models", nargs="+", default=["DiT-Micro/2"])
    p.add_argument("--embedders", nargs="*", default=["pixels", "effnet_lite0", "classifier"])
    p.add_argument("--resolution", type=int, default=32, help="image side R (a multiple of 4)")
    a = p.parse_args()
    res, lat = a.resolution, a.resolution // 4   # vq-f4-c4: (4, R/4, R/4) latents
    torch.set_num_threads(a.threads)
    gen = torch.Generator().manual_seed(0)
    out = Entries(a.threads)
    print(f"# load average at start: {os.getloadavg()}", flush=True)
    for name in a.models:
        model = build_dit(name, lat, 4, num_classes=10)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x, y = torch.randn(64, 4, lat, lat, generator=gen), torch.randint(0, 10, (64,), generator=gen)

        def step() -> None:
            loss = training_loss(model, x, y, gen).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        out.append(("dit_train", {"model": name, "latent": [4, lat, lat], "batch": 64},
                    rate(step, 1, a.iters * 4)))
        model.eval()
        noise, labels = torch.randn(128, 4, lat, lat, generator=gen), torch.randint(0, 10, (128,), generator=gen)
        fn = cfg_velocity_fn(model, labels, 1.5)
        with torch.no_grad():
            out.append(("dit_sample", {"model": name, "latent": [4, lat, lat], "method": "heun"},
                        rate(lambda: sample_ode(fn, noise, 8, "heun"), 128 * 8, max(1, a.iters // 2))))
        ids = torch.arange(64)
        out.append(("stats_loss", {"model": name, "latent": [4, lat, lat]},
                    rate(lambda: per_sample_losses(model, per_sample_flow_loss, x, y, ids, 2, 0), 64 * 2,
                         a.iters)))
        for params, only in (("all", None), ("output", DiT.OUTPUT_LAYER)):
            out.append(("stats_grad", {"model": name, "latent": [4, lat, lat], "params": params},
                        rate(lambda: per_sample_grad_norms(model, per_sample_flow_loss, x, y, ids, 2,
                                                           0, 64, only=only),
                             64 * 2, max(1, a.iters // 2))))
    vq = build_vqvae("vq-f4-c4")
    imgs = torch.rand(64, 3, res, res, generator=gen) * 2 - 1
    vopt = torch.optim.Adam(vq.parameters(), lr=2e-4)
    out.append(("vqvae_train", {"preset": "vq-f4-c4", "resolution": res, "batch": 64},
                rate(lambda: vqvae_train_step(vq, imgs, vopt), 1, a.iters)))
    vq.eval()
    with torch.no_grad():
        z = vq.encode(imgs)
        out.append(("vqvae_encode", {"preset": "vq-f4-c4", "resolution": res},
                    rate(lambda: vq.encode(imgs), 64, a.iters)))
        out.append(("vqvae_decode", {"preset": "vq-f4-c4", "resolution": res},
                    rate(lambda: vq.decode(z), 64, a.iters)))
    images = np.random.default_rng(0).integers(0, 256, (128, res, res, 3), dtype=np.uint8)
    from models.classifier import train_classifier

    labels = np.arange(len(images)) % 10
    out.append(("classifier_train", {"resolution": res, "batch": 128},
                rate(lambda: train_classifier(images, labels, 10, steps=20, batch_size=128), 20,
                     max(1, a.iters // 2))))
    for emb in a.embedders:
        try:
            e = build_embedder(emb, device="cpu", weights=_classifier_file(images)
                               if emb == "classifier" else None)
        except Exception as err:  # missing weights: not measured
            print(f"# {emb}: not measured ({err})")
            continue
        out.append(("embed", {"embedder": emb, "resolution": res}, rate(lambda: e(images), 128, a.iters)))
    print(f"# load average at end: {os.getloadavg()}; threads {a.threads}")


if __name__ == "__main__":
    main()
