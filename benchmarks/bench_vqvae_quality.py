"""How good can a sample be? The VQ-VAE's reconstructions against real images.

Every generated sample is decoded by the VQ-VAE, so its reconstructions of real
images bound what any trial can reach in the evaluation feature space. This
trains one preset on Fashion-MNIST (the quickstart data) and, at a few step
counts, scores the reconstructions of held-out images against real images with the
same metrics the sweep reports (fd, precision, recall in EffNet-Lite0 space).
The baseline row ``real`` scores a second set of real images the same way.

    python -m benchmarks.bench_vqvae_quality [--steps 250 500 1000] [--n 3000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks._util import header
from eval.frechet import compute_fd
from eval.prdc import compute_prdc
from models import build_embedder, build_vqvae
from models.vqvae import (fit_latent_scale, images_to_model, model_to_images, psnr,
                          vqvae_train_step)
from orchestrator.config import DatasetConfig
from orchestrator.data.sources import load_arrays


@torch.no_grad()
def reconstruct(model: torch.nn.Module, images: np.ndarray, batch: int = 250) -> np.ndarray:
    """Encode and decode (through the codebook) ``images``: uint8 in, uint8 out."""
    model.eval()
    out = [model_to_images(model.decode(model.encode(images_to_model(images[i:i + batch]))))
           for i in range(0, len(images), batch)]
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="vq-f4-c4")
    ap.add_argument("--steps", type=int, nargs="+", default=[250, 500, 1000])
    ap.add_argument("--n", type=int, default=3000, help="training images (quickstart: 3000)")
    ap.add_argument("--eval", type=int, default=1500, help="held-out images scored")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    header("bench_vqvae_quality", vars(args))
    torch.set_num_threads(max(1, torch.get_num_threads()))

    arrays = load_arrays(DatasetConfig(name="fmnist", source="fashion_mnist", split="train",
                                       resolution=32, limit=args.n + 2 * args.eval))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(arrays.images))
    train = arrays.images[order[:args.n]]
    held = arrays.images[order[args.n:args.n + args.eval]]
    ref = arrays.images[order[args.n + args.eval:]]
    embed = build_embedder("effnet_lite0")
    ref_f, held_f = embed(ref), embed(held)
    base = {**compute_fd(ref_f, held_f), **compute_prdc(ref_f, held_f)}
    print(f"{'steps':>6} {'s/step':>7} {'psnr':>6} {'fd':>8} {'prec':>6} {'recall':>6}")
    print(f"{'real':>6} {'':>7} {'':>6} {base['fd']:8.2f} {base['precision']:6.3f} "
          f"{base['recall']:6.3f}")

    torch.manual_seed(0)
    model = build_vqvae(args.preset)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(0)
    x_train = images_to_model(train)
    done, t0 = 0, time.perf_counter()
    for target in sorted(args.steps):
        while done < target:
            idx = torch.randint(len(x_train), (args.batch_size,), generator=gen)
            vqvae_train_step(model, x_train[idx], opt)
            done += 1
        per_step = (time.perf_counter() - t0) / done
        fit_latent_scale(model, x_train[:1000])
        rec = reconstruct(model, held)
        rec_f = embed(rec)
        m = {**compute_fd(ref_f, rec_f), **compute_prdc(ref_f, rec_f)}
        p = psnr(images_to_model(rec), images_to_model(held))
        print(f"{target:6d} {per_step:7.3f} {p:6.2f} {m['fd']:8.2f} {m['precision']:6.3f} "
              f"{m['recall']:6.3f}", flush=True)
        t0 = time.perf_counter() - per_step * done   # exclude evaluation from s/step


if __name__ == "__main__":
    main()
