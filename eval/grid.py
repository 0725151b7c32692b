"""Sample-grid PNG writer for reports and MLflow artifacts."""

from __future__ import annotations

import math
import os

import numpy as np


def make_grid(images: np.ndarray, nrow: int = 8, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile images row-major into one image.

    Args:
        images: (B, H, W, 3) uint8 RGB.
        nrow: images per row (as torchvision's ``make_grid``).
        padding: pixels between tiles and around the border.
        pad_value: uint8 fill of the padding.

    Returns:
        (rows * (H + p) + p, nrow' * (W + p) + p, 3) uint8, nrow' = min(nrow, B).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
        raise ValueError(f"images must be non-empty uint8 (B, H, W, 3), got {images.dtype} {images.shape}")
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    b, h, w, _ = images.shape
    cols = min(nrow, b)
    rows = math.ceil(b / cols)
    grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, 3), pad_value, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        y = padding + r * (h + padding)
        x = padding + c * (w + padding)
        grid[y : y + h, x : x + w] = img
    return grid


def save_sample_grid(images: np.ndarray, path: str, nrow: int = 8, padding: int = 2) -> str:
    """Write a grid of samples as a PNG (lossless, so pixels read back exactly).

    Args:
        images: (B, H, W, 3) uint8 RGB.
        path: output file; parent folders are created.
        nrow: images per row.
        padding: pixels between tiles.

    Returns:
        The path written.
    """
    from PIL import Image

    grid = make_grid(images, nrow=nrow, padding=padding)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    Image.fromarray(grid).save(path, format="PNG")
    return path
