"""Frechet distance between Gaussian fits of two feature sets, and clean-fid FID.

``compute_fd`` works in any embedder space (the orchestrator renames ``fd`` to
``fd_<embedder.short>``, ``fid`` for Inception). ``compute_fid_from_images`` is FID
for callers that hold images: it takes the feature function (the project's one
Inception path is ``models.build_embedder("inception")``, clean-fid's network and
"clean" resize), so ``eval`` never loads a network itself.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from eval.knn import as_features


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

    Uses the sample form (``frechet_distance_from_samples``, O(N M D)) when N M <= D^2,
    else the D x D covariance form (O((N + M) D^2 + D^3)). At quickstart size (1500
    reference and 250 generated features in 1280 dimensions) the covariance form's
    D x D eigendecompositions were ~1/4 of a trial's evaluation (cProfile, issue #13).

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
    if real.shape[0] * fake.shape[0] <= real.shape[1] ** 2:
        return {"fd": frechet_distance_from_samples(real, fake)}
    mu1, s1 = gaussian_stats(real)
    mu2, s2 = gaussian_stats(fake)
    return {"fd": frechet_distance(mu1, s1, mu2, s2)}


def compute_fid_from_images(real_images: np.ndarray, fake_images: np.ndarray,
                            features: Callable[[np.ndarray], np.ndarray]) -> dict[str, float]:
    """FID between two image sets: the Frechet distance of their Inception features.

    Args:
        real_images: (N, H, W, 3) uint8 RGB reference images.
        fake_images: (M, H', W', 3) uint8 RGB generated images.
        features: images (B, H, W, 3) uint8 -> (B, 2048) Inception pool features, e.g.
            ``models.build_embedder("inception", weights=...)`` (clean-fid "clean" mode).

    Returns:
        {"fid": float}.

    Raises:
        ValueError: images that are not uint8 (B, H, W, 3).
    """
    for images in (real_images, fake_images):
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (B, H, W, 3), got {images.dtype} {images.shape}")
    return {"fid": compute_fd(features(real_images), features(fake_images))["fd"]}
