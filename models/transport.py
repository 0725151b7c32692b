"""Flow matching (rectified-flow linear path) for DiT on VQ-VAE latents.

TIME CONVENTION (the one place it is defined for all of prunediff):
    t in [0, 1]; t = 0 is pure noise, t = 1 is data.
    x_t = t * x1 + (1 - t) * x0,   x0 ~ N(0, I),   x1 = data latent.
    The model predicts the velocity dx_t/dt = x1 - x0.
    Samplers integrate dx/dt = v(x, t) from t = 0 (noise) to t = 1 (data).
t is drawn uniformly on [0, 1] during training.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import Tensor, nn

VelocityFn = Callable[[Tensor, Tensor], Tensor]
SAMPLERS = ("euler", "heun")


def _bcast(t: Tensor, x: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) matching x's rank (vmap-safe: no data-dependent shapes)."""
    return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


def interpolate(x1: Tensor, noise: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Point on the linear path and its velocity target.

    Args:
        x1: (B, C, H, W) data latents. noise: (B, C, H, W) x0. t: (B,) in [0, 1].

    Returns:
        x_t (B, C, H, W) and target velocity x1 - x0 (B, C, H, W).
    """
    tb = _bcast(t, x1)
    return tb * x1 + (1 - tb) * noise, x1 - noise


def per_sample_flow_loss(
    model: nn.Module, x1: Tensor, y: Tensor | None, t: Tensor, noise: Tensor
) -> Tensor:
    """Per-sample flow-matching loss at given (t, noise); the pruning LossFn.

    Args:
        model: velocity model called as model(x_t, t, y).
        x1: (B, C, H, W) data latents. y: (B,) int64 or None.
        t: (B,) float in [0, 1]. noise: (B, C, H, W) N(0, I) draws.

    Returns:
        (B,) mean squared velocity error over (C, H, W).
    """
    x_t, target = interpolate(x1, noise, t)
    v = model(x_t, t, y)
    return (v - target).pow(2).flatten(1).mean(dim=1)


def training_loss(
    model: nn.Module, x1: Tensor, y: Tensor | None, generator: torch.Generator | None = None
) -> Tensor:
    """Per-sample loss (B,) with t ~ U[0, 1] and N(0, I) noise drawn from ``generator``.

    The draws are made on the generator's device and moved to x1's device, so a CPU
    generator gives the same numbers whatever device the model runs on.
    """
    dev = generator.device if generator is not None else x1.device
    b = x1.shape[0]
    t = torch.rand(b, generator=generator, device=dev).to(x1.device, x1.dtype)
    noise = torch.randn(x1.shape, generator=generator, device=dev).to(x1.device, x1.dtype)
    return per_sample_flow_loss(model, x1, y, t, noise)


@torch.no_grad()
def sample_ode(velocity_fn: VelocityFn, noise: Tensor, steps: int, method: str = "heun") -> Tensor:
    """Integrate dx/dt = v(x, t) from t = 0 (noise) to t = 1 (data) on a uniform grid.

    Args:
        velocity_fn: v(x (B, ...), t (B,)) -> (B, ...).
        noise: (B, ...) starting point x0.
        steps: number of intervals (Heun uses 2 evaluations per interval).
        method: "euler" (first order) or "heun" (second order, trapezoidal corrector).

    Returns:
        (B, ...) samples at t = 1.
    """
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; choose one of {SAMPLERS}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    x = noise
    b = x.shape[0]
    grid = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    for i in range(steps):
        t0, t1 = float(grid[i]), float(grid[i + 1])
        dt = t1 - t0
        tt0 = torch.full((b,), t0, device=x.device, dtype=x.dtype)
        v0 = velocity_fn(x, tt0)
        x_euler = x + dt * v0
        if method == "euler":
            x = x_euler
        else:
            tt1 = torch.full((b,), t1, device=x.device, dtype=x.dtype)
            x = x + 0.5 * dt * (v0 + velocity_fn(x_euler, tt1))
    return x


def cfg_velocity_fn(model: nn.Module, y: Tensor | None, cfg_scale: float) -> VelocityFn:
    """Velocity function for sample_ode with classifier-free guidance.

    Scale 1 gives the conditional prediction; an unconditional model (or y None)
    ignores the scale.
    """

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        if y is None or getattr(model, "num_classes", 0) == 0:
            return model(x, t, None)
        if cfg_scale == 1.0:
            # Skip the null-class pass: exactly the conditional prediction, half the cost.
            keep = torch.zeros(y.shape, dtype=torch.bool, device=y.device)
            return model(x, t, y, drop_mask=keep)
        return model.forward_with_cfg(x, t, y, cfg_scale)

    return velocity


class EMA:
    """Exponential moving average of a model's parameters (buffers are copied).

    Args:
        model: the model being trained.
        decay: weight of the old average per update, in [0, 1).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """ema <- decay * ema + (1 - decay) * model."""
        src = dict(model.named_parameters())
        for name, p in self.module.named_parameters():
            p.lerp_(src[name].detach().to(p.dtype), 1.0 - self.decay)
        src_b = dict(model.named_buffers())
        for name, b in self.module.named_buffers():
            b.copy_(src_b[name])
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates,
                "module": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        self.module.load_state_dict(state["module"])
