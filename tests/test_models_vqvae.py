"""VQ-VAE: presets, quantizer mechanics, scale, checkpoints, PSNR, Fashion-MNIST fit."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import (VQVAE_PRESETS, build_vqvae, fit_latent_scale, load_vqvae, psnr, save_vqvae,
                    vqvae_train_step)
from models.vqvae import EMAQuantizer, images_to_model

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


# Tiny models run fastest on one thread; the shared 2-core machine thrashes on 2.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def read_idx_images(path: Path, limit: int) -> np.ndarray:
    """Minimal IDX3 reader: big-endian header (magic, n, rows, cols), then uint8 pixels."""
    with gzip.open(path, "rb") as f:
        header = f.read(16)
        assert int.from_bytes(header[:4], "big") == 0x803, "not an IDX3 ubyte file"
        n, rows, cols = (int.from_bytes(header[i:i + 4], "big") for i in (4, 8, 12))
        n = min(n, limit)
        return np.frombuffer(f.read(n * rows * cols), np.uint8).reshape(n, rows, cols).copy()


def fmnist_tensor(limit: int) -> torch.Tensor:
    """(N, 3, 32, 32) in [-1, 1]: 28x28 padded to 32 with black, gray -> RGB."""
    x = torch.from_numpy(read_idx_images(FMNIST, limit)).float().div(127.5).sub(1.0)
    return F.pad(x[:, None], (2, 2, 2, 2), value=-1.0).expand(-1, 3, -1, -1).contiguous()


@pytest.mark.parametrize("name", sorted(VQVAE_PRESETS))
def test_presets_build_with_declared_factor(name: str) -> None:
    f, c = int(name[4]), int(name[-1])
    model = build_vqvae(name)
    assert model.downsample == f and model.latent_channels == c
    if name == "vq-f4-c4":  # the CPU preset: run it end to end
        z = model.encode(torch.zeros(2, 3, 32, 32))
        assert z.shape == (2, 4, 8, 8)
        assert model.decode(z).shape == (2, 3, 32, 32)
    else:  # 256x256 presets: check the shape at a small input to keep the test fast
        with torch.no_grad():
            z = model.encoder(torch.zeros(1, 3, 64, 64))
            assert z.shape == (1, c, 8, 8)
            assert model.decoder(z).shape == (1, 3, 64, 64)


def test_unknown_preset_rejected() -> None:
    with pytest.raises(ValueError, match="vq-f4-c4"):
        build_vqvae("vq-f3-c1")


def test_quantizer_assigns_nearest_code_and_straight_through() -> None:
    q = EMAQuantizer(num_codes=5, dim=2)
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[0.0, 0], [1, 0], [0, 1], [-1, 0], [3, 3]]))
    h = torch.tensor([[0.9, 0.2], [-0.1, 1.4], [2.0, 2.5]]).T.reshape(1, 2, 1, 3)
    flat = h.permute(0, 2, 3, 1).reshape(-1, 2)
    brute = torch.cdist(flat, q.codebook).argmin(1)  # independent nearest-code search
    assert brute.tolist() == [1, 2, 4]
    assert torch.equal(q.nearest(flat), brute)
    q.eval()
    h.requires_grad_(True)
    out, commit, _ = q(h)
    torch.testing.assert_close(out.detach(), q.codebook[brute].T.reshape(1, 2, 1, 3))
    out.sum().backward()
    torch.testing.assert_close(h.grad, torch.ones_like(h))  # straight-through estimator
    want = 0.25 * (flat - q.codebook[brute]).pow(2).mean()
    torch.testing.assert_close(commit, want)


def test_ema_update_and_dead_code_restart() -> None:
    q = EMAQuantizer(num_codes=4, dim=2, decay=0.5, dead_threshold=0.3, seed=3)
    q.train()
    h = torch.tensor([[1.0, 1.0], [1.2, 0.8], [-1.0, -1.0], [-0.8, -1.2]]).reshape(1, 2, 2, 2)
    h = h.permute(0, 3, 1, 2).contiguous()  # (1, 2, 2, 2): 4 vectors
    q(h)  # first call: data-dependent init from the batch
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[1.0, 1.0], [-1.0, -1.0], [9.0, 9.0], [8.0, 8.0]]))
        q.code_sum.copy_(q.codebook)
        q.usage.fill_(1.0)
    _, _, stats = q(h)
    # usage: 0.5*1 + 0.5*count -> [1.5, 1.5, 0.5, 0.5]; nothing dead yet.
    torch.testing.assert_close(q.usage, torch.tensor([1.5, 1.5, 0.5, 0.5]))
    assert stats["restarts"] == 0
    code_sum0 = 0.5 * torch.tensor([1.0, 1.0]) + 0.5 * torch.tensor([2.2, 1.8])
    torch.testing.assert_close(q.code_sum[0], code_sum0)
    _, _, stats = q(h)  # unused codes 2, 3 fall to 0.25 < 0.3 and are restarted
    assert stats["restarts"] == 2
    flat = h.permute(0, 2, 3, 1).reshape(-1, 2)
    for row in q.codebook[2:]:
        assert torch.isclose(torch.cdist(row[None], flat).min(), torch.tensor(0.0), atol=1e-6)


def test_psnr_matches_skimage() -> None:
    from skimage.metrics import peak_signal_noise_ratio

    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 3, 8, 8, generator=g) * 2 - 1
    b = (a + 0.1 * torch.randn(3, 3, 8, 8, generator=g)).clamp(-1, 1)
    want = np.mean([peak_signal_noise_ratio(a[i].numpy(), b[i].numpy(), data_range=2.0)
                    for i in range(3)])
    assert psnr(a, b) == pytest.approx(want, rel=1e-6)


def test_scale_and_checkpoint_roundtrip(tmp_path: Path) -> None:
    model = build_vqvae("vq-f4-c4")
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 3, 32, 32, generator=g) * 2 - 1
    scale = fit_latent_scale(model, x)
    with torch.no_grad():
        raw = model.encoder(x)
        z = model.encode(x)
    assert scale == pytest.approx(1.0 / raw.std().item(), rel=1e-5)
    assert z.std().item() == pytest.approx(1.0, rel=1e-4)
    path = tmp_path / "vq.pt"
    save_vqvae(model, str(path), "vq-f4-c4")
    loaded = load_vqvae(str(path))
    assert loaded.preset == "vq-f4-c4" and float(loaded.scale) == pytest.approx(scale)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), z)
        torch.testing.assert_close(loaded.decode(z), model.decode(z))
    torch.load(path, weights_only=True)  # the file is plain tensors and containers


@pytest.mark.skipif(not FMNIST.is_file(), reason=f"Fashion-MNIST IDX files missing at {FMNIST}")
def test_f4_vqvae_beats_bilinear_on_fashion_mnist() -> None:
    x = fmnist_tensor(1700)
    train, test = x[:1500], x[1500:]
    model = build_vqvae("vq-f4-c4")
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(90):
        stats = vqvae_train_step(model, train[torch.randint(0, 1500, (16,), generator=gen)], opt)
    assert np.isfinite(stats["loss"]) and stats["perplexity"] > 8
    fit_latent_scale(model, train[:256])
    with torch.no_grad():
        z = model.encode(test)
        recon = model.decode(z)
    assert z.shape == (200, 4, 8, 8)
    # Baseline: the same 8x8 spatial size, bilinear down (antialiased) and up.
    small = F.interpolate(test, size=8, mode="bilinear", antialias=True, align_corners=False)
    base = F.interpolate(small, size=32, mode="bilinear", align_corners=False)
    assert psnr(recon, test) > psnr(base, test) + 0.3, (psnr(recon, test), psnr(base, test))


def test_images_to_model_values_and_contiguous_nchw() -> None:
    images = np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3)
    x = images_to_model(images)
    assert x.shape == (2, 3, 4, 5) and x.dtype == torch.float32
    assert x.is_contiguous()            # not a channels-last view (slower convolutions)
    expected = images.transpose(0, 3, 1, 2).astype(np.float64) / 127.5 - 1.0
    np.testing.assert_allclose(x.numpy(), expected, rtol=0, atol=1e-6)
