"""Frechet distance between Gaussian fits of two feature sets, and clean-fid FID.

``compute_fd`` works in any embedder space (the orchestrator renames ``fd`` to
``fd_<embedder.short>``, ``fid`` for Inception). ``compute_fid_from_images`` runs
clean-fid's own Inception feature extractor (mode "clean": PIL bicubic resize to 299)
for callers that hold images rather than features.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import urllib.error
import urllib.request

import numpy as np

from eval.knn import as_features

INCEPTION_FILENAME = "inception-2015-12-05.pt"
# Where clean-fid itself caches the file (Linux); a copy there is found without config.
INCEPTION_DEFAULT_PATH = os.path.join("/tmp", INCEPTION_FILENAME)
INCEPTION_URL = (
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/" + INCEPTION_FILENAME
)


class MissingWeightsError(FileNotFoundError):
    """The Inception TorchScript file is absent and could not be downloaded."""


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix; tiny negative eigenvalues clipped to 0."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``tr sqrt(S1 S2)`` is computed as ``tr sqrt(A S2 A)`` with ``A = sqrt(S1)``: that
    matrix is symmetric PSD, so ``eigvalsh`` gives real eigenvalues even when S1 S2 is
    near singular (where ``scipy.linalg.sqrtm`` returns complex noise).

    Args:
        mu1: (D,) mean.
        sigma1: (D, D) covariance.
        mu2: (D,) mean.
        sigma2: (D, D) covariance.

    Returns:
        |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2), clipped at 0.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(
            f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    # Symmetrize: covariances from np.cov are symmetric only up to rounding.
    sigma1 = (sigma1 + sigma1.T) / 2
    sigma2 = (sigma2 + sigma2.T) / 2
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean
    return float(max(value, 0.0))


def gaussian_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of features.

    Args:
        x: (N, D) features, N >= 2.

    Returns:
        mu (D,) float64 and sigma (D, D) float64.
    """
    x = as_features(x, "features")
    if x.shape[0] < 2:
        raise ValueError("need at least 2 samples for a covariance")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def frechet_distance_from_samples(x: np.ndarray, y: np.ndarray) -> float:
    """Frechet distance of the Gaussian fits of x and y without forming D x D matrices.

    With centred data ``Xc`` (n, D) and ``S = Xc^T Xc / (n - 1)``, the nonzero
    eigenvalues of ``S1 S2`` are the squared singular values of
    ``Xc1 Xc2^T / sqrt((n1 - 1)(n2 - 1))``, so ``tr sqrt(S1 S2)`` is that (n1, n2)
    matrix's nuclear norm: O(n1 n2 D) instead of O(D^3), for few samples in a wide
    space (a quick run's 200 samples in Inception's 2048 dimensions).

    Args:
        x: (N, D) features, N >= 2.
        y: (M, D) features, M >= 2.

    Returns:
        The same value as ``frechet_distance`` on ``gaussian_stats`` of x and y.
    """
    x = as_features(x, "real")
    y = as_features(y, "fake")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("need at least 2 samples per set for a covariance")
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    cx, cy = x.shape[0] - 1, y.shape[0] - 1
    tr_covmean = np.linalg.svd(xc @ yc.T, compute_uv=False).sum() / np.sqrt(cx * cy)
    diff = x.mean(axis=0) - y.mean(axis=0)
    value = diff @ diff + np.einsum("nd,nd->", xc, xc) / cx + np.einsum("nd,nd->", yc, yc) / cy - 2 * tr_covmean
    return float(max(value, 0.0))


def compute_fd(real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
    """Frechet distance between Gaussian fits of real and generated features.

    Uses the D x D covariance form, or the sample form
    (``frechet_distance_from_samples``) when both sets are smaller than D.

    Args:
        real: (N, D) reference features.
        fake: (M, D) generated-sample features.

    Returns:
        {"fd": float}.
    """
    real = as_features(real, "real")
    fake = as_features(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dims differ: real {real.shape[1]} vs fake {fake.shape[1]}")
    if max(real.shape[0], fake.shape[0]) < real.shape[1]:
        return {"fd": frechet_distance_from_samples(real, fake)}
    mu1, s1 = gaussian_stats(real)
    mu2, s2 = gaussian_stats(fake)
    return {"fd": frechet_distance(mu1, s1, mu2, s2)}


def resolve_inception_weights(weights_path: str | None = None, download: bool = True, timeout_s: float = 20.0) -> str:
    """Path of clean-fid's Inception TorchScript file, downloading it when missing.

    Args:
        weights_path: explicit file path (from the config); must exist.
        download: when no file is found, fetch it to ``INCEPTION_DEFAULT_PATH`` with a
            single request bounded by ``timeout_s`` (clean-fid's own download has no
            timeout; offline machines should fail fast with a usable message).
        timeout_s: socket timeout for that request.

    Returns:
        Path of an existing weight file.

    Raises:
        MissingWeightsError: naming where to put the file.
    """
    hint = (
        f"download {INCEPTION_URL} and either place it at {INCEPTION_DEFAULT_PATH} "
        "(clean-fid's cache) or give its path as the Inception weights in the config"
    )
    if weights_path is not None:
        if not os.path.isfile(weights_path):
            raise MissingWeightsError(f"Inception weights not found at {weights_path!r}: {hint}")
        return weights_path
    if os.path.isfile(INCEPTION_DEFAULT_PATH):
        return INCEPTION_DEFAULT_PATH
    if not download:
        raise MissingWeightsError(f"Inception weights not found and download disabled: {hint}")
    tmp = INCEPTION_DEFAULT_PATH + f".part{os.getpid()}"
    try:
        with urllib.request.urlopen(INCEPTION_URL, timeout=timeout_s) as resp, open(tmp, "wb") as f:
            shutil.copyfileobj(resp, f)
        os.replace(tmp, INCEPTION_DEFAULT_PATH)  # atomic: no half file in the cache
    except (urllib.error.URLError, socket.timeout, OSError) as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise MissingWeightsError(f"could not download Inception weights ({err}): {hint}") from err
    return INCEPTION_DEFAULT_PATH


def inception_features(
    images: np.ndarray, weights_path: str, device: str = "cpu", batch_size: int = 32
) -> np.ndarray:
    """clean-fid Inception pool features of uint8 images (mode "clean").

    Args:
        images: (B, H, W, 3) uint8 RGB.
        weights_path: existing TorchScript file (see ``resolve_inception_weights``).
        device: torch device string.
        batch_size: images per forward pass.

    Returns:
        (B, 2048) float64 features.
    """
    import torch
    from cleanfid.inception_torchscript import InceptionV3W
    from cleanfid.resize import build_resizer

    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (B, H, W, 3), got {images.dtype} {images.shape}")
    # InceptionV3W only loads <dir>/inception-2015-12-05.pt; link other names into a temp dir.
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.dirname(os.path.abspath(weights_path))
        if os.path.basename(weights_path) != INCEPTION_FILENAME:
            os.symlink(os.path.abspath(weights_path), os.path.join(tmp, INCEPTION_FILENAME))
            folder = tmp
        model = InceptionV3W(folder, download=False, resize_inside=False).to(device).eval()
    resize = build_resizer("clean")  # float32 (299, 299, 3) in [0, 255]
    feats = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            batch = np.stack([resize(img) for img in images[start : start + batch_size]])
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous().to(device)
            feats.append(model(x).double().cpu().numpy())
    return np.concatenate(feats)


def compute_fid_from_images(
    real_images: np.ndarray,
    fake_images: np.ndarray,
    weights_path: str | None = None,
    device: str = "cpu",
    download: bool = True,
) -> dict[str, float]:
    """clean-fid FID (mode "clean") between two image sets.

    The orchestrator normally computes FID as ``fd`` on the ``inception`` embedder's
    features; this entry point is for callers holding images.

    Args:
        real_images: (N, H, W, 3) uint8 RGB reference images.
        fake_images: (M, H', W', 3) uint8 RGB generated images.
        weights_path: local Inception TorchScript file; default: clean-fid's cache.
        device: torch device ("cpu" by default, unlike clean-fid's "cuda").
        download: make one bounded download attempt when no file is found.

    Returns:
        {"fid": float}.

    Raises:
        MissingWeightsError: no weight file (message says where to put it).
    """
    path = resolve_inception_weights(weights_path, download=download)
    real = inception_features(real_images, path, device)
    fake = inception_features(fake_images, path, device)
    return {"fid": compute_fd(real, fake)["fd"]}
