"""prunediff.models: VQ-VAE, DiT, flow matching and feature embedders (torch only).

Registries (keys are the exact YAML names):
    MODELS: DiT presets, "DiT-XL/2" ... "DiT-S/8", plus "DiT-Tiny/2", "DiT-Micro/2".
    VQVAE_PRESETS: "vq-f4-c4" (32x32 CPU), "vq-f8-c4", "vq-f8-c8" (256x256).
    EMBEDDERS: "effnet_lite0", "clip", "dinov2", "inception", "pixels".

Interim commit: the keys are final; the implementations land in dit.py, vqvae.py
and embedders.py (issue 3).
"""
from __future__ import annotations

from typing import Any, Callable


def _pending(name: str) -> Callable[..., Any]:
    def build(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"models: {name!r} is being implemented (issue 3)")

    return build


from models.dit import MODELS, DiT, build_dit
from models.transport import (EMA, cfg_velocity_fn, per_sample_flow_loss, sample_ode,
                              training_loss)
VQVAE_PRESETS: dict[str, Callable[..., Any]] = {
    k: _pending(k) for k in ("vq-f4-c4", "vq-f8-c4", "vq-f8-c8")
}
EMBEDDERS: dict[str, Any] = {
    k: _pending(k) for k in ("effnet_lite0", "clip", "dinov2", "inception", "pixels")
}
