"""The one DiT training loop (flow matching on latents), and what it needs from its executor.

Every DiT that the project trains goes through :func:`train_steps`: a sweep trial
(:mod:`orchestrator.training.trial`), the proxy (:mod:`orchestrator.training.proxy_stats`,
whose statistics are a hook of this loop) and the benchmarks. The callers differ only
in their setup (EMA or not, optimizer settings, what a checkpoint holds) and in their
hooks; batches, random streams and the optimizer step are the same code.

The executor is injected as a :class:`TrialRuntime`: rank, world size and device, DDP
wrapping, checkpoint save/restore and the final report. Ray Train's implementation is
``orchestrator.runtime.train.TrainRuntime``; :class:`LocalRuntime` runs in-process
(tests, benchmarks). No Ray is imported here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from models import build_dit
from models.transport import training_loss
from orchestrator.progress import progress

T = TypeVar("T")
# (steps done, this step's loss) -> None; called on every rank after each optimizer step
StepHook = Callable[[int, float], None]
LABEL_STREAM_OFFSET = 7_919   # class-dropout stream seed = t/noise stream seed + this


class TrialRuntime(Protocol):
    """What a training run needs from the system that executes it.

    ``rank``/``world``/``device`` place this process in the DDP group. Checkpoints are
    a set of files (``{file name: state dict}``) written with ``torch.save``; a rank
    that passes no files still reports (DDP ranks report together).
    """

    rank: int
    world: int
    device: torch.device

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Move to the device and wrap for DDP when ``world > 1``."""

    def save_checkpoint(self, metrics: dict[str, float], files: dict[str, dict]) -> None:
        """Report ``metrics`` with a checkpoint holding ``files`` (none: metrics only)."""

    def load_checkpoint(self, read: Callable[[str], T]) -> T | None:
        """``read(directory)`` of the latest checkpoint of this run, or None if there is none."""

    def finish(self, metrics: dict[str, float]) -> None:
        """The run's last report, once every rank is done."""


class LocalRuntime:
    """A single-process :class:`TrialRuntime` (rank 0 of 1), checkpoints kept in memory.

    Args:
        device: torch device to train on.
        keep: keep the checkpoints in ``self.checkpoints`` (benchmarks pass False to
            measure the loop alone).
    """

    def __init__(self, device: str | torch.device = "cpu", keep: bool = True):
        self.rank, self.world, self.device = 0, 1, torch.device(device)
        self.keep = keep
        self.checkpoints: list[tuple[dict[str, float], dict[str, dict]]] = []
        self.final: dict[str, float] | None = None

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model.to(self.device)

    def save_checkpoint(self, metrics: dict[str, float], files: dict[str, dict]) -> None:
        if self.keep and files:
            self.checkpoints.append((dict(metrics), files))

    def load_checkpoint(self, read: Callable[[str], T]) -> T | None:
        return None

    def finish(self, metrics: dict[str, float]) -> None:
        self.final = dict(metrics)


def write_checkpoint_files(directory: str, files: dict[str, dict]) -> None:
    """``torch.save`` each ``{name: state}`` into ``directory`` (what a checkpoint holds)."""
    for name, state in files.items():
        torch.save(state, os.path.join(directory, name))


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
        """Rows of the data this rank trains on at ``step``: (batch_size // world,) int64."""
        offsets = step * self.batch + np.arange(self.batch)
        epochs, pos = offsets // self.n, offsets % self.n
        rows = np.array([self._perm(int(e))[p] for e, p in zip(epochs, pos)], dtype=np.int64)
        return rows[rank::world]


def stream_seed(seed: int, rank: int, world: int) -> int:
    """Seed of a rank's t/noise stream (STYLE.md: ``seed * world_size + rank``)."""
    return seed * world + rank


def build_model(preset: str, latent_shape: tuple[int, ...], num_classes: int, seed: int,
                rank: int, world: int, class_dropout: float = 0.1,
                init_seed: int | None = None) -> tuple[nn.Module, torch.Generator]:
    """A DiT for latents of ``latent_shape`` with this rank's random streams.

    Args:
        preset: ``models.MODELS`` key.
        latent_shape: (C, h, w) of one latent.
        num_classes: 0 for an unconditional model.
        seed, rank, world: the streams are seeded ``seed * world + rank`` (t and noise)
            and that + 7919 (class dropout, ``model.label_generator``).
        class_dropout: probability of the null class in training.
        init_seed: seeds the initial weights (``DiT(seed=...)``, its own generator, the
            same on every rank); None: ``seed``. Torch's global generator is not used.

    Returns:
        (model on CPU, the t/noise generator).
    """
    c, h = latent_shape[0], latent_shape[1]
    model = build_dit(preset, input_size=h, in_channels=c, num_classes=num_classes,
                      class_dropout_prob=class_dropout,
                      seed=int(seed if init_seed is None else init_seed))
    base = stream_seed(seed, rank, world)
    model.label_generator = torch.Generator().manual_seed(base + LABEL_STREAM_OFFSET)
    return model, torch.Generator().manual_seed(base)


def all_mean(value: float, world: int) -> float:
    """Mean of ``value`` over the DDP ranks (the value itself when ``world == 1``)."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / world


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (the model itself when unwrapped)."""
    return model.module if hasattr(model, "module") else model


@dataclass(frozen=True)
class LoopSpec:
    """The schedule of one run of :func:`train_steps`.

    Attributes:
        steps: total optimizer steps of the run (a resumed run continues to it).
        batch_size: global batch size (split over the ranks).
        seed: seeds the per-epoch permutations (:class:`EpochBatches`).
        desc: progress-bar label (rank 0 only).
        amp: bf16 autocast on CUDA.
    """

    steps: int
    batch_size: int
    seed: int
    desc: str = "train"
    amp: bool = False


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, x_all: torch.Tensor,
                y_all: torch.Tensor | None, gen: torch.Generator, loop: LoopSpec,
                runtime: TrialRuntime, start: int = 0, ema: Any = None,
                hooks: Iterable[StepHook] = ()) -> None:
    """Steps ``start .. loop.steps - 1`` of flow-matching training, in place.

    Args:
        model: the (prepared, possibly DDP-wrapped) DiT.
        opt: its optimizer.
        x_all: (N, C, h, w) float32 latents on CPU (batches move to the device).
        y_all: (N,) int64 labels, or None for an unconditional model.
        gen: the t/noise generator (``models.transport.training_loss``).
        loop: steps, batch size, permutation seed.
        runtime: gives rank, world size and device.
        start: first step (the checkpoint's step when resumed).
        ema: a ``models.transport.EMA`` updated after every step, or None.
        hooks: called with ``(steps done, loss)`` after each step, in order.
    """
    rank, world, device = runtime.rank, runtime.world, runtime.device
    inner = unwrap(model)
    hooks = tuple(hooks)
    batches = EpochBatches(x_all.shape[0], loop.batch_size, loop.seed)
    for step in progress(range(start, loop.steps), loop.desc, total=loop.steps, initial=start,
                         disable=rank != 0):
        idx = torch.from_numpy(batches.indices(step, rank, world))
        x = x_all[idx].to(device)
        y = y_all[idx].to(device) if y_all is not None else None
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=loop.amp):
            loss = training_loss(model, x, y, generator=gen).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update(inner)
        value = float(loss.item())
        for hook in hooks:
            hook(step + 1, value)
