"""Shared pieces of the feature embedders: base class, weight files, resizing."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MissingWeightsError(RuntimeError):
    """A pretrained weight file is needed but absent (and cannot be downloaded)."""


def weights_dir() -> Path:
    """Where embedders look for weight files: $PRUNEDIFF_WEIGHTS or ~/.cache/prunediff/weights."""
    return Path(os.environ.get("PRUNEDIFF_WEIGHTS", Path.home() / ".cache/prunediff/weights"))


def hub_reachable(host: str, timeout: float = 3.0) -> bool:
    """False when HF_HUB_OFFLINE is set or ``host:443`` does not answer quickly.

    Checked before any download so offline machines fail in seconds with a clear
    MissingWeightsError instead of retrying a hub for a minute.
    """
    if offline():
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def offline() -> bool:
    """Whether downloads are switched off ($HF_HUB_OFFLINE or $PRUNEDIFF_OFFLINE)."""
    return (os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
            or bool(os.environ.get("PRUNEDIFF_OFFLINE")))


def fetch_weights(url: str, path: Path, hint: str, timeout_s: float = 20.0) -> Path:
    """Download ``url`` to ``path`` with one request bounded by ``timeout_s``.

    The file appears atomically (no half file is left behind); offline machines fail
    fast with a usable message instead of retrying.

    Raises:
        MissingWeightsError: the download failed; the message ends with ``hint``.
    """
    import shutil
    import urllib.error
    import urllib.request

    tmp = f"{path}.part{os.getpid()}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp, open(tmp, "wb") as f:
            shutil.copyfileobj(resp, f)
        os.replace(tmp, path)
    except (urllib.error.URLError, socket.timeout, OSError) as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise MissingWeightsError(f"could not download {url} ({err}): {hint}") from err
    return path


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
    build ``self.net`` in __init__ and implement ``preprocess`` and ``features``.
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
