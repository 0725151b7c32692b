"""Shared pieces of the feature embedders: base class, weight-file loading, resizing."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Weight files are found by models/weights.py (no torch there); re-exported for callers.
from models.weights import (MissingWeightsError, WeightSpec, fetch_weights, offline,  # noqa: F401
                            weights_dir)


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Load a state dict from .safetensors or a torch file (weights_only=True).

    Unwraps the common {"state_dict": ...} / {"model": ...} containers.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"weight file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return sd


def to_tensor(images: np.ndarray) -> Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [0, 255], validated."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise TypeError("embedders take a numpy uint8 array (B, H, W, 3)")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"embedders take (B, H, W, 3) images, got shape {images.shape}")
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()


def resize_center_crop(x: Tensor, size: int, mode: str = "bicubic") -> Tensor:
    """Resize the shorter side to ``size`` (antialiased) and center-crop to size x size.

    x: (B, 3, H, W) float -> (B, 3, size, size).
    """
    h, w = x.shape[-2:]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode=mode, antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[..., top:top + size, left:left + size]


class Embedder:
    """Maps (B, H, W, 3) uint8 images to (B, D) float32 features (raw, not normalized).

    Subclasses set ``name`` (EMBEDDERS key), ``short`` (metric-key suffix) and ``dim``,
    build ``self.net`` in __init__ and implement ``preprocess`` and ``features``. Those with
    pretrained weights return a WeightSpec from ``weight_spec`` and record the file they
    loaded in ``self.weights_path`` (None: random or no weights).
    """

    name: ClassVar[str]
    short: ClassVar[str]
    dim: ClassVar[int]
    batch_size: int = 64

    def __init__(self, device: str = "cpu", weights: str | None = None,
                 pretrained: bool = True) -> None:
        self.device = torch.device(device)
        self.weights = weights
        self.pretrained = pretrained
        self.net: nn.Module | None = None
        self.weights_path: Path | None = None

    @classmethod
    def weight_spec(cls) -> WeightSpec | None:
        """Where the pretrained weight file is looked for (models/weights.py); None: none."""
        return None

    def preprocess(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) float in [0, 255] -> network input."""
        raise NotImplementedError

    def features(self, x: Tensor) -> Tensor:
        """Network input -> (B, dim)."""
        raise NotImplementedError

    def _finish(self, net: nn.Module) -> nn.Module:
        # Per-parameter loop: ScriptModules (clean-fid's Inception) lack requires_grad_().
        for p in net.parameters():
            p.requires_grad_(False)
        return net.eval().to(self.device)

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = to_tensor(images)
        out = []
        for i in range(0, x.shape[0], self.batch_size):
            chunk = self.preprocess(x[i:i + self.batch_size].to(self.device))
            out.append(self.features(chunk).float().cpu())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return torch.cat(out).numpy().astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, device={self.device})"
