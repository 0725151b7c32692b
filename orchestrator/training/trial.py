"""One sweep trial, on every rank of its training run: DDP DiT training, then (rank 0)
sampling, metrics and the result record. This is where a trial's model gets trained.

Every rank trains on its stride of a per-epoch permutation of ``latents[subset]``
for the configured fixed number of steps (:func:`orchestrator.training.loop.train_steps`),
with EMA and checkpoints every ``train.checkpoint_every`` steps; a restarted run
continues from the last checkpoint. Rank 0 then samples with the EMA model (ODE +
CFG), decodes with the VQ-VAE, computes the metrics
(:mod:`orchestrator.training.evaluate`) and writes the trial's files. The
:class:`TrialResult` is written last: its presence in the cache means the trial is done.

The executor (Ray Train today) comes in as a :class:`TrialRuntime`.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch

from models.transport import EMA
from orchestrator.storage.cache import ArtifactCache
from orchestrator.storage.tables import Table
from orchestrator.training.evaluate import (evaluate, generate, sample_grid_key, save_sample_grid,
                                            vqvae_from_cache)
from orchestrator.training.loop import (LoopSpec, TrialRuntime, all_mean, build_model,
                                        stream_seed, train_steps, unwrap)
from orchestrator.training.records import TrialFiles, TrialResult, TrialSpec
from orchestrator.training.spaces import local_weights

STATE_FILE = "state.pt"   # a trial checkpoint: model, ema, opt, step, curve (rank 0 writes it)


def load_inputs(cache: ArtifactCache, spec: TrialSpec) -> dict[str, np.ndarray]:
    """What the trial trains and measures on, read part by part from the latents table:
    ``latents`` (n_train, C, h, w) float32 and ``train_labels`` (n_train,) int64 of the
    subset alone; ``labels`` (N,) int64 of every training image and ``subset``
    (n_train,) int64, the subset's positions among them (memorization, coverage)."""
    table = Table(cache, spec.inputs.latents)
    sub = cache.load_arrays(spec.inputs.subset)
    kept = table.read(["label", "latent"], ids=sub["ids"])
    return {"latents": kept["latent"].astype(np.float32),
            "train_labels": kept["label"].astype(np.int64),
            "labels": table.column("label").astype(np.int64),
            "subset": sub["indices"].astype(np.int64)}


def _read_state(directory: str) -> dict:
    return torch.load(os.path.join(directory, STATE_FILE), map_location="cpu", weights_only=True)


def reseed_streams(gen: torch.Generator, model: Any, seed: int, rank: int, world: int,
                   step: int) -> None:
    """Several ranks: re-derive this rank's t/noise and class-dropout streams at a checkpoint.

    Rank 0 alone saves a checkpoint, so the other ranks' generator states are not in it.
    Instead every rank re-seeds both streams from (seed, world, rank, step) at every
    checkpoint step, in a resumed run and in an uninterrupted one alike, so a run resumed
    from a checkpoint draws exactly what the uninterrupted run drew; ranks stay independent.
    """
    base = stream_seed(seed, rank, world) * 1_000_003 + step
    gen.manual_seed(base % 2**63)
    model.label_generator.manual_seed((base + 7_919) % 2**63)


def train_model(spec: TrialSpec, data: dict[str, np.ndarray],
                runtime: TrialRuntime) -> tuple[Any, list, int]:
    """Train the trial's DiT; returns (EMA model on the device, loss curve [[step, loss]], start step).

    The start step is 0 for a new run and the checkpoint's step for a resumed one.
    """
    tc, seed, rank, world = spec.train, spec.trial.seed, runtime.rank, runtime.world
    x_all = torch.from_numpy(data["latents"])
    y_all = torch.from_numpy(data["train_labels"]) if spec.conditional else None
    # the trial seed draws the initial weights (the same on every rank), and seeds the
    # t/noise, class-dropout and batch-order streams
    model, gen = build_model(spec.model.preset, tuple(x_all.shape[1:]),
                             spec.num_classes if spec.conditional else 0, seed, rank, world,
                             class_dropout=spec.model.class_dropout, init_seed=seed)
    ema = EMA(model, tc.ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    start, curve = 0, []
    state = runtime.load_checkpoint(_read_state)
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        start, curve = int(state["step"]), state["curve"].tolist()
        if world == 1 and "rng" in state:
            # One rank: the checkpoint holds its streams, so the resumed run is
            # bit-identical to an uninterrupted one.
            gen.set_state(state["rng"]["noise"])
            model.label_generator.set_state(state["rng"]["labels"])
        else:
            reseed_streams(gen, model, seed, rank, world, start)
    ema.module.to(runtime.device)
    model = runtime.prepare_model(model)
    window: list[float] = []
    loss_val = float("nan")

    def log_and_checkpoint(done: int, loss: float) -> None:
        nonlocal window, loss_val
        window.append(loss)
        if done % tc.log_every == 0 or done == tc.steps:
            loss_val = all_mean(float(np.mean(window)), world)
            curve.append([done, loss_val])
            window = []
        if done % tc.checkpoint_every == 0 or done == tc.steps:
            files = {}
            if rank == 0:
                inner = unwrap(model)
                files[STATE_FILE] = {
                    "model": inner.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                    "step": done, "curve": torch.tensor(curve, dtype=torch.float64).reshape(-1, 2)}
                if world == 1:
                    files[STATE_FILE]["rng"] = {"noise": gen.get_state(),
                                                "labels": inner.label_generator.get_state()}
            runtime.save_checkpoint({"step": done, "loss": loss_val}, files)
            if world > 1:
                # what a run resumed from this checkpoint does: the same streams from here on
                reseed_streams(gen, unwrap(model), seed, rank, world, done)

    amp = runtime.device.type == "cuda" and tc.precision == "bf16"
    train_steps(model, opt, x_all, y_all, gen,
                LoopSpec(tc.steps, tc.batch_size, seed, desc=spec.trial.name, amp=amp),
                runtime, start=start, ema=ema, hooks=[log_and_checkpoint])
    return ema.module.eval(), curve, start


def run_trial(spec: TrialSpec, runtime: TrialRuntime) -> TrialResult | None:
    """Train, then on rank 0 sample, evaluate and cache the result; every rank finishes
    together through ``runtime.finish``. Returns the result on rank 0, None elsewhere."""
    cache = ArtifactCache(spec.cache_root)
    t0 = time.time()
    data = load_inputs(cache, spec)
    ema_model, curve, start = train_model(spec, data, runtime)
    t_train = time.time() - t0
    result = None
    if runtime.rank == 0:
        result = sample_evaluate_save(cache, spec, ema_model, data, runtime.device, curve, start,
                                      runtime.world, {"t0": t0, "train_s": t_train},
                                      node_id=getattr(runtime, "node_id", None))
    runtime.finish(result.metrics if result is not None else {})
    return result


def sample_evaluate_save(cache: ArtifactCache, spec: TrialSpec, ema_model: Any, data: dict,
                         device: torch.device, curve: list, start: int, world: int,
                         clock: dict[str, float], node_id: str | None = None) -> TrialResult:
    """Rank 0: samples, metrics, grid and the :class:`TrialResult` (written last)."""
    vq = vqvae_from_cache(cache, spec.inputs.vqvae)
    images = generate(vq, ema_model, spec.sample, spec.trial.seed, spec.conditional,
                      spec.num_classes, tuple(data["latents"].shape[1:]), device)
    t_sample = time.time() - clock["t0"] - clock["train_s"]
    features = {name: Table(cache, key).column("features")
                for name, key in spec.inputs.features.items()}
    refs = {name: Table(cache, key).read(["label", "features"])      # held-out
            for name, key in spec.inputs.reference.items()}
    centres = {name: cache.load_arrays(key)["centroids"]
               for name, key in spec.inputs.centroids.items()}
    train_nn = {name: cache.load_arrays(key)["train_nn"]
                for name, key in spec.inputs.train_nn.items()}
    with local_weights(cache, spec.inputs.weights) as trained:
        metrics = evaluate(images, features, data["labels"], data["subset"], spec.eval,
                           spec.trial.seed, spec.num_classes,
                           "cuda" if device.type == "cuda" else "cpu",
                           weights={**spec.eval_weights, **trained},
                           reference={name: r["features"] for name, r in refs.items()},
                           reference_labels=refs[spec.eval.primary]["label"],
                           centroids=centres, train_nn=train_nn)
    if "classifier_test_accuracy" in spec.params:   # (c)'s labeller, validated: in the CSV
        metrics["classifier_accuracy"] = float(spec.params["classifier_test_accuracy"])
    t_eval = time.time() - clock["t0"] - clock["train_s"] - t_sample
    gkey = sample_grid_key(spec.key)
    save_sample_grid(cache, gkey, images)
    result = TrialResult(
        key=spec.key, trial=spec.trial, params=spec.params, metrics=metrics, loss_curve=curve,
        timing={"train_s": clock["train_s"], "sample_s": t_sample, "eval_s": t_eval},
        resumed_from_step=start, world_size=world, finished_at=time.time(),
        files=TrialFiles(grid=gkey, manifest=spec.inputs.subset), node_id=node_id)
    cache.save_json(spec.key, result.to_json())  # written last: its presence marks the trial done
    return result
