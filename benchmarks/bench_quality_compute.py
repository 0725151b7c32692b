"""Quality versus compute of the full-data model (issue 12): which recipe is good enough?

The quickstart's full-data model reached precision 0.73 but recall 0.14 in the
classifier space, too low for precision/recall to rank pruning methods. This trains
the full-data model on Fashion-MNIST 32x32 (the quickstart data: 3000 training images,
the held-out reference of 1500 test-split images) over the levers that matter, and
scores every point the way a sweep trial is scored in the primary space (``cls``:
FD, precision, recall, density, coverage at k = 3 against the held-out reference,
250 samples), against the CPU-seconds it took (``time.process_time``, all threads):

- ``vq``: the autoencoder alone. Its reconstructions of 250 held-out images are the
  ceiling every sample is decoded through (rows ``arm = vq:<spec>``).
- ``dit``: DiT preset, learning-rate schedule (constant or 5% warm-up + cosine), EMA
  decay (two EMAs of one run), scored at several step counts of one run.
- ``sampler``: the last model of every DiT arm over sampler steps and CFG scale.
- ``real``: 250 other held-out test images against the reference: the best any model
  can score at this sample count.

CPU-seconds of a DiT point = the autoencoder's training + the DiT's training up to that
step + sampling; rows are appended to the CSV as they are measured, so an interrupted
run keeps what it measured. ``--plot`` draws the CSV into docs/figures/.

    python -m benchmarks.bench_quality_compute [--vq vq-f4-c4@500,1500] [--dit DiT-Micro/2:constant ...]
    python -m benchmarks.bench_quality_compute --append --vq vq-f4-c4@500 --dit DiT-S/2@600  # one more arm
    python -m benchmarks.bench_quality_compute --plot benchmarks/results/quality_compute_<date>.csv
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import math
import os
import time

import numpy as np
import torch

from benchmarks._util import REPO, header
from benchmarks.bench_vqvae_quality import reconstruct
from eval.frechet import compute_fd
from eval.prdc import compute_prdc
from models import build_embedder, build_vqvae
from models.transport import EMA
from models.vqvae import fit_latent_scale, images_to_model, vqvae_train_step
from orchestrator.config import DatasetConfig
from orchestrator.config.schema import ClassifierConfig, SampleConfig
from orchestrator.data.sources import load_arrays, load_reference
from orchestrator.training.evaluate import generate
from orchestrator.training.loop import LocalRuntime, LoopSpec, build_model, train_steps
from orchestrator.training.spaces import fit_classifier

FIELDS = ["arm", "autoencoder", "vq_steps", "dit", "schedule", "lr", "train_steps", "ema",
          "sampler_steps", "cfg", "cpu_s", "wall_s", "fd", "precision", "recall", "density",
          "coverage", "f_score"]
QUICKSTART = DatasetConfig(name="fmnist", source="fashion_mnist", split="train", resolution=32,
                           limit=3000, path="/usr/share/datasets/fashion-mnist")


@dataclasses.dataclass
class Space:
    """The primary evaluation space: the classifier trained on the training images.

    Attributes:
        embed: images (B, 32, 32, 3) uint8 -> (B, D) features.
        reference: (R, D) features of the held-out reference.
        control: (M, 32, 32, 3) uint8 held-out images, not in the reference.
    """

    embed: object
    reference: np.ndarray
    control: np.ndarray

    def score(self, images: np.ndarray, k: int = 3) -> dict[str, float]:
        fake = np.concatenate([self.embed(images[s:s + 250]) for s in range(0, len(images), 250)])
        return {**compute_fd(self.reference, fake), **compute_prdc(self.reference, fake, k)}


def build_space(train: np.ndarray, labels: np.ndarray, num_real: int, num_samples: int,
                workdir: str) -> Space:
    """Classifier space (the quickstart's recipe), reference and control features."""
    ref_all = load_reference(QUICKSTART)        # the whole test split, positions as ids
    ref_cap = load_reference(QUICKSTART, num_real)
    rest = np.setdiff1d(np.arange(len(ref_all.images)), ref_cap.ids)
    control = ref_all.images[np.random.default_rng(1).choice(rest, num_samples, replace=False)]
    blob, info = fit_classifier(train, labels, 10, ClassifierConfig())
    path = os.path.join(workdir, "classifier.pt")
    with open(path, "wb") as f:
        f.write(blob)
    print(f"# classifier space: test accuracy {info['test_accuracy']:.3f}", flush=True)
    emb = build_embedder("classifier", weights=path)
    return Space(embed=emb, reference=emb(ref_cap.images), control=control)


def parse_spec(text: str) -> tuple[str, dict, list[int]]:
    """``preset[:key=v,key=v]@s1,s2`` -> (preset, overrides, steps); ch_mult as 1-2-4."""
    body, _, steps = text.partition("@")
    name, _, opts = body.partition(":")
    over: dict = {}
    for kv in filter(None, opts.split(",")):
        k, v = kv.split("=")
        over[k] = tuple(int(c) for c in v.split("-")) if k == "ch_mult" else int(v)
    return name, over, [int(s) for s in steps.split(",")] if steps else []


def run_vq(spec: str, train: np.ndarray, space: Space, batch: int, lr: float, emit,
           score: bool = True) -> dict[int, tuple[object, float]]:
    """Train one autoencoder; score its reconstructions at each step count (``score``:
    emit its rows; off when the CSV already holds them).

    Returns:
        steps -> (a copy of the model, CPU-seconds of its training).
    """
    name, over, steps = parse_spec(spec)
    model = build_vqvae(name, **over)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    x = images_to_model(train)
    out, done, cpu, wall = {}, 0, 0.0, 0.0
    for target in sorted(steps):
        c0, w0 = time.process_time(), time.perf_counter()
        while done < target:
            vqvae_train_step(model, x[torch.randint(len(x), (batch,), generator=gen)], opt)
            done += 1
        fit_latent_scale(model, x[:1000])
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        out[target] = (copy.deepcopy(model).eval(), cpu)
        if score:
            emit({"arm": f"vq:{spec.partition('@')[0]}", "autoencoder": spec.partition("@")[0],
                  "vq_steps": target, "cpu_s": cpu, "wall_s": wall},
                 space.score(reconstruct(model, space.control)))
    return out


def lr_hook(opt: torch.optim.Optimizer, lr: float, steps: int, schedule: str):
    """Set the learning rate for the next step (5% linear warm-up, then cosine to 0)."""
    warm = max(1, steps // 20)

    def factor(step: int) -> float:
        if schedule == "constant":
            return 1.0
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))

    def hook(done: int, loss: float) -> None:
        for g in opt.param_groups:
            g["lr"] = lr * factor(done)
    hook(0, 0.0)
    return hook


def run_dit(spec: str, vq, vq_cpu: float, latents: torch.Tensor, labels: torch.Tensor,
            space: Space, args, base: dict, emit) -> tuple[object, float, int]:
    """Train ``preset:schedule@s1,s2`` once; score each EMA at each step count.

    Returns:
        (the EMA model of the lowest FD at the last step count, CPU-seconds, steps).
    """
    body, _, steps = spec.partition("@")
    preset, _, schedule = body.partition(":")
    schedule = schedule or "constant"
    evals = sorted(int(s) for s in steps.split(",")) if steps else args.dit_steps
    model, gen = build_model(preset, tuple(latents.shape[1:]), 10, 0, 0, 1, init_seed=0)
    emas = {d: EMA(model, d) for d in args.ema}
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    hooks = [lr_hook(opt, args.lr, evals[-1], schedule),
             lambda done, loss: [e.update(model) for e in list(emas.values())[1:]]]
    runtime, done, cpu, wall = LocalRuntime(keep=False), 0, vq_cpu, 0.0
    for target in evals:
        c0, w0 = time.process_time(), time.perf_counter()
        train_steps(model, opt, latents, labels, gen, LoopSpec(target, 64, 0, desc=preset),
                    runtime, start=done, ema=next(iter(emas.values())), hooks=hooks)
        done = target
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        fds = {}
        for decay, ema in emas.items():
            row = {**base, "arm": f"dit:{body}", "dit": preset, "schedule": schedule,
                   "lr": args.lr, "train_steps": target, "ema": decay}
            fds[decay] = sample(vq, ema.module, latents, SampleConfig(num_samples=args.num_samples),
                                row, cpu, wall, space, emit)["fd"]
    best = min(fds, key=fds.get)
    emas[best].module.ema_decay = best
    return emas[best].module, cpu, evals[-1]


def sample(vq, model, latents: torch.Tensor, sc: SampleConfig, row: dict, cpu: float,
           wall: float, space: Space, emit) -> dict[str, float]:
    """Sample ``sc.num_samples`` images, score them, emit the row with sampling's cost added;
    returns the metrics."""
    c0, w0 = time.process_time(), time.perf_counter()
    images = generate(vq, model, sc, 0, True, 10, tuple(latents.shape[1:]), torch.device("cpu"))
    return emit({**row, "sampler_steps": sc.steps, "cfg": sc.cfg_scale,
                 "cpu_s": cpu + time.process_time() - c0, "wall_s": wall + time.perf_counter() - w0},
                space.score(images))


def sweep_sampler(vq, model, latents: torch.Tensor, row: dict, cpu: float, space: Space,
                  args, emit) -> None:
    """Score one trained model over sampler steps x CFG scale (Heun)."""
    for steps in args.sampler_steps:
        for cfg in args.cfg:
            sample(vq, model, latents, SampleConfig(num_samples=args.num_samples, steps=steps,
                                                    cfg_scale=cfg), {**row, "arm": "sampler"},
                   cpu, 0.0, space, emit)


def writer(path: str):
    """``emit(row, metrics)``: print the row and append it to the CSV at ``path``."""
    new = not os.path.exists(path)
    if new:
        with open(path, "w", newline="") as f:
            csv.DictWriter(f, FIELDS).writeheader()
    print(f"{'arm':<30} {'vq':>5} {'steps':>6} {'ema':>6} {'samp':>4} {'cfg':>4} {'cpu_s':>7} "
          f"{'fd':>7} {'prec':>6} {'recall':>6} {'cover':>6}", flush=True)

    def emit(row: dict, m: dict[str, float]) -> dict[str, float]:
        full = {**{k: "" for k in FIELDS}, **row, **{k: m[k] for k in m if k in FIELDS}}
        with open(path, "a", newline="") as f:
            csv.DictWriter(f, FIELDS).writerow(full)
        print(f"{full['arm']:<30} {full['vq_steps']!s:>5} {full['train_steps']!s:>6} "
              f"{full['ema']!s:>6} {full['sampler_steps']!s:>4} {full['cfg']!s:>4} "
              f"{full['cpu_s']:7.0f} {full['fd']:7.2f} {full['precision']:6.3f} "
              f"{full['recall']:6.3f} {full['coverage']:6.3f}", flush=True)
        return m
    return emit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vq", nargs="+", default=["vq-f4-c4@500,1500"],
                    help="autoencoders: preset[:key=v,...]@steps,... (ch_mult as 1-2)")
    ap.add_argument("--dit-vq", default=None,
                    help="the autoencoder (spec@steps) whose latents the DiTs train on "
                         "(default: the first --vq at its first step count)")
    ap.add_argument("--dit", nargs="+", default=["DiT-Micro/2:constant", "DiT-Micro/2:cosine",
                                                 "DiT-Tiny/2:constant"],
                    help="preset[:constant|cosine][@steps,...]")
    ap.add_argument("--dit-steps", type=int, nargs="+", default=[600, 1500, 4000])
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema", type=float, nargs="+", default=[0.99, 0.999])
    ap.add_argument("--sampler-steps", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--cfg", type=float, nargs="+", default=[1.0, 1.5, 2.5, 4.0])
    ap.add_argument("--num-samples", type=int, default=250)
    ap.add_argument("--num-real", type=int, default=1500)
    ap.add_argument("--out", default=os.path.join(
        REPO, "benchmarks", "results", f"quality_compute_{time.strftime('%Y-%m-%d')}.csv"))
    ap.add_argument("--plot", default=None, help="only draw this CSV into docs/figures/")
    ap.add_argument("--append", action="store_true",
                    help="--out already holds the real and autoencoder rows of this data: "
                         "train the autoencoder for its latents but do not score it again")
    args = ap.parse_args()
    if args.plot:
        from benchmarks.quality_compute_plot import plot

        print(plot(args.plot))
        return
    header("bench_quality_compute", vars(args))
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    workdir = os.path.join(REPO, "outputs", "quality_compute")
    os.makedirs(workdir, exist_ok=True)
    data = load_arrays(QUICKSTART)
    space = build_space(data.images, data.labels, args.num_real, args.num_samples, workdir)
    emit = writer(args.out)
    if not args.append:
        emit({"arm": "real", "cpu_s": 0.0, "wall_s": 0.0}, space.score(space.control))
    vqs = {}
    for spec in args.vq:
        for steps, (model, cpu) in run_vq(spec, data.images, space, 64, 1e-3, emit,
                                          score=not args.append).items():
            vqs[f"{spec.partition('@')[0]}@{steps}"] = (model, cpu)
    key = args.dit_vq or f"{args.vq[0].partition('@')[0]}@{parse_spec(args.vq[0])[2][0]}"
    vq, vq_cpu = vqs[key]
    with torch.no_grad():
        x = images_to_model(data.images)
        latents = torch.cat([vq.encode(x[s:s + 500]) for s in range(0, len(x), 500)])
    labels = torch.from_numpy(data.labels.astype(np.int64))
    base = {"autoencoder": key.partition("@")[0], "vq_steps": int(key.partition("@")[2])}
    for spec in args.dit:
        model, cpu, steps = run_dit(spec, vq, vq_cpu, latents, labels, space, args, base, emit)
        body = spec.partition("@")[0]
        row = {**base, "dit": body.partition(":")[0], "schedule": body.partition(":")[2]
               or "constant", "lr": args.lr, "train_steps": steps, "ema": model.ema_decay}
        sweep_sampler(vq, model, latents, row, cpu, space, args, emit)
    print(f"# rows: {args.out}")


if __name__ == "__main__":
    main()
