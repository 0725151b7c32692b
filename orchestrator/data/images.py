"""Image decoding and resizing shared by the data sources.

- :func:`read_idx` reads the IDX format of (Fashion-)MNIST (``.gz`` or raw) with numpy.
- :func:`resize_batch` resizes a whole uint8 batch at once with a separable bilinear
  (triangle) filter, antialiased when shrinking like PIL's ``BILINEAR``: two small
  matrix products instead of 60,000 PIL calls.
- :func:`decode_image` turns any file PIL can read into ``(R, R, 3)`` uint8 RGB:
  grayscale, RGBA, CMYK, palette and 16-bit images are converted; the image is
  centre-cropped to a square and resized the way ADM/DiT preprocess ImageNet (box
  halving while still >= 2x the target, then bicubic).
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
from PIL import Image

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (optionally gzip-compressed) as a numpy array.

    Raises:
        ValueError: not an IDX file, or truncated (fewer bytes than its header says).
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: corrupt gzip stream ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header < expected:
        raise ValueError(f"{path}: truncated IDX data ({len(raw) - header} of {expected} bytes)")
    return np.frombuffer(raw, dtype, count=int(np.prod(shape)), offset=header).reshape(shape)


def resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) bilinear weights with pixel centres at +0.5 (PIL convention).

    When shrinking, the triangle widens by the scale factor (antialiasing), as in
    PIL's resampler; rows sum to 1.
    """
    scale = n_in / n_out
    support = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale                   # in input coordinates
    x = np.arange(n_in) + 0.5
    w = np.clip(1.0 - np.abs(x[None, :] - centres[:, None]) / support, 0.0, None)
    return w / w.sum(axis=1, keepdims=True)


def resize_batch(images: np.ndarray, size: int, chunk: int = 4096) -> np.ndarray:
    """Resize square uint8 images to ``size`` x ``size`` with the bilinear filter.

    Args:
        images: (N, H, W) or (N, H, W, C) uint8.
        size: output side.
        chunk: images per matrix product (bounds float32 memory).
    Returns:
        (N, size, size[, C]) uint8.
    """
    n, h, w = images.shape[:3]
    if (h, w) == (size, size):
        return images.copy()
    ry = resample_matrix(h, size).astype(np.float32)
    rx = resample_matrix(w, size).astype(np.float32)
    out = np.empty((n, size, size) + images.shape[3:], np.uint8)
    spec = "oh,nhw...,pw->nop..."
    for start in range(0, n, chunk):
        block = images[start:start + chunk].astype(np.float32)
        res = np.einsum(spec, ry, block, rx, optimize=True)
        out[start:start + chunk] = np.clip(np.rint(res), 0, 255).astype(np.uint8)
    return out


def gray_to_rgb(images: np.ndarray) -> np.ndarray:
    """(N, H, W) -> (N, H, W, 3) by repeating the channel."""
    return np.repeat(images[..., None], 3, axis=-1)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB; 16/32-bit and float images are rescaled, not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / top * 255.0, 0, 255)
        img = Image.fromarray(np.rint(arr).astype(np.uint8), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # avoids PIL's warning for palette transparency
    return img if img.mode == "RGB" else img.convert("RGB")


def center_crop_resize(img: Image.Image, size: int) -> Image.Image:
    """ADM/DiT ``center_crop_arr``: box-halve while large, bicubic, centre crop."""
    while min(img.size) >= 2 * size:
        img = img.resize(tuple(x // 2 for x in img.size), resample=Image.Resampling.BOX)
    scale = size / min(img.size)
    img = img.resize(tuple(max(size, round(x * scale)) for x in img.size),
                     resample=Image.Resampling.BICUBIC)
    left = (img.size[0] - size) // 2
    top = (img.size[1] - size) // 2
    return img.crop((left, top, left + size, top + size))


def decode_image(data: bytes, size: int) -> np.ndarray:
    """Encoded image bytes -> (size, size, 3) uint8 RGB.

    Raises:
        ValueError: empty, not an image, truncated or corrupt (the reason is in the
            message; callers skip and list the file).
    """
    if not data:
        raise ValueError("zero-byte file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decode fully now, so truncation is detected here
            rgb = _to_rgb(img)
            out = center_crop_resize(rgb, size)
            return np.asarray(out, dtype=np.uint8).copy()
    except Image.UnidentifiedImageError:
        raise ValueError("not an image file") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"corrupt image: {e}") from None
