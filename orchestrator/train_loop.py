"""The per-worker loop of one sweep trial: DDP DiT training, then sampling and metrics.

Runs inside a Ray Train worker (``TorchTrainer(train_trial_worker, ...)``). Every
rank trains on its stride of a per-epoch permutation of ``latents[subset]`` for the
configured fixed number of steps, with EMA and checkpoints (``ray.train.report``);
a restarted run continues from the last checkpoint. Rank 0 then samples with the
EMA model (ODE + CFG), decodes with the VQ-VAE, extracts features with the eval
embedder, computes the metrics and writes the trial's result files. The result
record (``result.json``) is written last: its presence means the trial is done.

``spec`` (JSON-able, built by :mod:`orchestrator.sweep`) names every input by URI.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import numpy as np
import torch

from orchestrator.cache import ArtifactCache

GRID_VERSION = 1


def _rank_info() -> tuple[int, int]:
    import ray.train

    ctx = ray.train.get_context()
    return ctx.get_world_rank(), ctx.get_world_size()


def _all_mean(value: float, world: int) -> float:
    if world == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / world


class EpochBatches:
    """Global batches from per-epoch permutations; a pure function of (seed, step).

    Rank r of W takes rows r, r+W, ... of each global batch, so DDP ranks see
    disjoint samples and a resumed run draws exactly the batches it would have.
    """

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch, self.seed = n, batch_size, seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perms[epoch]

    def indices(self, step: int, rank: int = 0, world: int = 1) -> np.ndarray:
        offsets = step * self.batch + np.arange(self.batch)
        epochs, pos = offsets // self.n, offsets % self.n
        rows = np.array([self._perm(int(e))[p] for e, p in zip(epochs, pos)], dtype=np.int64)
        return rows[rank::world]


def grid_key(trial_key: str) -> str:
    """Cache key of a trial's sample grid PNG (bytes)."""
    return ArtifactCache.key("trialgrid", GRID_VERSION, trial=trial_key)


def _load_inputs(cache: ArtifactCache, spec: dict) -> dict[str, np.ndarray]:
    lat = cache.load_arrays(spec["inputs"]["latents"])
    subset = cache.load_arrays(spec["inputs"]["subset"])["indices"]
    return {"latents": lat["latents"].astype(np.float32), "labels": lat["labels"].astype(np.int64),
            "subset": subset.astype(np.int64)}


def _save_checkpoint(state: dict, step: int, loss: float, rank: int) -> None:
    import ray.train

    with tempfile.TemporaryDirectory() as d:
        ckpt = None
        if rank == 0:
            torch.save(state, os.path.join(d, "state.pt"))
            ckpt = ray.train.Checkpoint.from_directory(d)
        from orchestrator.ray_utils import worker_pg_marker

        # fit()'s Result carries the latest checkpoint's metrics: the group id rides here.
        ray.train.report({"step": step, "loss": loss, **worker_pg_marker()}, checkpoint=ckpt)


def _restore() -> dict | None:
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        return torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=True)


def train_dit(spec: dict, data: dict[str, np.ndarray], rank: int, world: int) -> tuple[Any, list, int]:
    """Train the DiT; returns (EMA model on the device, loss curve [[step, loss]], start step).

    The start step is 0 for a new run and the checkpoint's step for a resumed one.
    """
    import ray.train.torch
    from models import build_dit
    from models.transport import EMA, training_loss

    tc, seed = spec["train"], spec["trial"]["seed"]
    device = ray.train.torch.get_device()
    x_all = torch.from_numpy(data["latents"][data["subset"]])
    y_all = torch.from_numpy(data["labels"][data["subset"]]) if spec["conditional"] else None
    n, (c, h, _) = x_all.shape[0], x_all.shape[1:]
    model = build_dit(spec["model"]["preset"], input_size=h, in_channels=c,
                      num_classes=spec["num_classes"] if spec["conditional"] else 0,
                      class_dropout_prob=spec["model"]["class_dropout"])
    model.label_generator = torch.Generator().manual_seed(seed * world + rank + 7_919)
    gen = torch.Generator().manual_seed(seed * world + rank)  # t and noise draws
    ema = EMA(model, tc["ema_decay"])
    opt = torch.optim.AdamW(model.parameters(), lr=tc["lr"], weight_decay=tc["weight_decay"])
    start, curve = 0, []
    state = _restore()
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        start, curve = int(state["step"]), state["curve"].tolist()
        # Rank 0 saves the checkpoint, so each rank re-derives its own streams from
        # (seed, world, rank, step): reproducible, and ranks stay independent.
        gen.manual_seed(((seed * world + rank) * 1_000_003 + start) % 2**63)
        model.label_generator.manual_seed(((seed * world + rank) * 1_000_003 + start + 7_919) % 2**63)
    ema.module.to(device)
    model = ray.train.torch.prepare_model(model)
    inner = model.module if hasattr(model, "module") else model
    batches = EpochBatches(n, tc["batch_size"], seed)
    amp = spec.get("use_gpu") and tc["precision"] == "bf16"
    window, loss_val = [], float("nan")
    from tqdm import tqdm

    bar = tqdm(range(start, tc["steps"]), desc=spec["trial"]["name"], disable=rank != 0,
               mininterval=15, initial=start, total=tc["steps"])
    for step in bar:
        idx = torch.from_numpy(batches.indices(step, rank, world))
        x = x_all[idx].to(device)
        y = y_all[idx].to(device) if y_all is not None else None
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bool(amp)):
            loss = training_loss(model, x, y, generator=gen).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(inner)
        window.append(loss.item())
        done = step + 1
        if done % tc["log_every"] == 0 or done == tc["steps"]:
            loss_val = _all_mean(float(np.mean(window)), world)
            curve.append([done, loss_val])
            window = []
        if done % tc["checkpoint_every"] == 0 or done == tc["steps"]:
            state = {"model": inner.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                     "step": done, "curve": torch.tensor(curve, dtype=torch.float64).reshape(-1, 2)}
            _save_checkpoint(state, done, loss_val, rank)
    return ema.module.eval(), curve, start


@torch.no_grad()
def generate(cache: ArtifactCache, spec: dict, ema_model: Any, latent_shape: tuple[int, ...],
             device: Any) -> np.ndarray:
    """Sample ``num_samples`` latents with the EMA model and decode them to uint8 images."""
    from models.transport import cfg_velocity_fn, sample_ode
    from orchestrator.encode import vqvae_from_cache

    sc, seed = spec["sample"], spec["trial"]["seed"]
    vq = vqvae_from_cache(cache, spec["inputs"]["vqvae"]).to(device).eval()
    gen = torch.Generator().manual_seed(seed)  # same noise for every trial of a seed
    m = sc["num_samples"]
    labels = None
    if spec["conditional"]:
        rng = np.random.default_rng(seed)
        labels = torch.from_numpy(rng.permutation(np.arange(m) % spec["num_classes"]).astype(np.int64))
    out = []
    for s in range(0, m, sc["batch_size"]):
        b = min(sc["batch_size"], m - s)
        noise = torch.randn((b, *latent_shape), generator=gen).to(device)
        y = labels[s:s + b].to(device) if labels is not None else None
        z = sample_ode(cfg_velocity_fn(ema_model, y, sc["cfg_scale"]), noise, sc["steps"], sc["method"])
        img = vq.decode(z).clamp(-1, 1)
        out.append(((img + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out)


def evaluate(cache: ArtifactCache, spec: dict, images: np.ndarray, data: dict[str, np.ndarray],
             device: str) -> dict[str, float]:
    """Configured metrics of generated images against the full data's features."""
    from eval import METRICS, MetricInputs, balanced_indices, nearest_neighbour_labels
    from models import build_embedder

    ec, seed = spec["eval"], spec["trial"]["seed"]
    emb = build_embedder(ec["embedder"], device=device, weights=spec.get("eval_weights"))
    fake = np.concatenate([emb(images[s:s + 128]) for s in range(0, len(images), 128)])
    feats = cache.load_arrays(spec["inputs"]["features"])["features"].astype(np.float32)
    n = feats.shape[0]
    real_idx = np.sort(np.random.default_rng(seed).permutation(n)[:min(ec["num_real"], n)])
    real, real_labels = feats[real_idx], data["labels"][real_idx]
    inputs = MetricInputs(real=real, fake=fake, train=feats[data["subset"]],
                          reference_labels=real_labels, num_classes=spec["num_classes"] or None)
    if "cluster_coverage" in ec["metrics"]:
        if (real_labels < 0).any():
            raise ValueError("metric 'cluster_coverage' needs a labelled dataset")
        # label each sample by its nearest neighbour in a class-balanced labelled set, so a
        # skewed dataset's large classes get no head start
        bal = balanced_indices(data["labels"], np.random.default_rng(seed))
        inputs = MetricInputs(real=real, fake=fake, train=inputs.train, reference_labels=real_labels,
                              num_classes=spec["num_classes"],
                              fake_labels=nearest_neighbour_labels(feats[bal], data["labels"][bal],
                                                                   fake))
    metrics: dict[str, float] = {}
    for name in ec["metrics"]:
        for key, value in METRICS[name](inputs).items():
            metrics[f"fd_{emb.short}" if key == "fd" and emb.short != "fid" else
                    ("fid" if key == "fd" else key)] = float(value)
    return metrics


def train_trial_worker(spec: dict) -> None:
    """Ray Train loop of one trial (see module docstring)."""
    import ray.train
    import ray.train.torch

    torch.set_num_threads(int(spec.get("threads", 1)))
    rank, world = _rank_info()
    cache = ArtifactCache(spec["cache_root"])
    t0 = time.time()
    data = _load_inputs(cache, spec)
    ema_model, curve, start = train_dit(spec, data, rank, world)
    t_train = time.time() - t0
    metrics: dict[str, float] = {}
    if rank == 0:
        metrics = _sample_evaluate_save(cache, spec, ema_model, data, curve, start, world, t0, t_train)
    if world > 1:
        # Every rank finishes together: a rank that returns while rank 0 still samples
        # left the run's placement group behind under Ray Train V2 (seen on 2 CPUs).
        import torch.distributed as dist

        dist.barrier()
    from orchestrator.ray_utils import worker_pg_marker

    # Not "done": Tune reads that key as "stop this trial" and would kill the trainable
    # while its Train controller still runs (a zombie that then held the CPUs).
    ray.train.report({"trial_finished": 1, **metrics, **worker_pg_marker()})


def _sample_evaluate_save(cache: ArtifactCache, spec: dict, ema_model: Any, data: dict,
                          curve: list, start: int, world: int, t0: float, t_train: float) -> dict:
    """Rank 0: samples, metrics, grid and the result record (written last)."""
    import ray.train.torch
    from eval import save_sample_grid

    device = ray.train.torch.get_device()
    images = generate(cache, spec, ema_model, tuple(data["latents"].shape[1:]), device)
    t_sample = time.time() - t0 - t_train
    metrics = evaluate(cache, spec, images, data, "cuda" if device.type == "cuda" else "cpu")
    t_eval = time.time() - t0 - t_train - t_sample
    gkey = grid_key(spec["key"])
    with tempfile.TemporaryDirectory() as d:
        path = save_sample_grid(images[:64], os.path.join(d, "samples.png"), nrow=8)
        with open(path, "rb") as f:
            cache.save_bytes(gkey, f.read())
    record = {"key": spec["key"], "trial": spec["trial"], "params": spec["params"],
              "metrics": metrics, "loss_curve": curve,
              "timing": {"train_s": t_train, "sample_s": t_sample, "eval_s": t_eval},
              "resumed_from_step": start, "world_size": world, "finished_at": time.time(),
              "files": {"grid": gkey, "manifest": spec["inputs"]["subset"]}}
    record["node_id"] = ray.get_runtime_context().get_node_id()  # multi-node tests: where it ran
    cache.save_json(spec["key"], record)  # written last: its presence marks the trial done
    return metrics
