"""Convolutional VQ-VAE (van den Oord et al. 2017) with an EMA codebook.

Latent convention (decided here, used by the whole pipeline):
    encode(x) returns the PRE-quantization encoder output h, multiplied by a stored
    scalar ``scale`` (= 1 / std(h) on the training data) so latents have unit
    variance. The diffusion model trains on these continuous latents.
    decode(z) divides by ``scale``, snaps each vector to its nearest codebook entry
    (the VQ bottleneck the decoder was trained on) and decodes. Snapping also
    projects small sampling errors of generated latents back onto the code set, as
    in the VQ-regularized latent diffusion models (Rombach et al. 2022).

Training: MSE reconstruction + beta * commitment loss; the codebook is updated by
EMA of assigned encoder outputs (not by gradients), and codes whose EMA usage falls
below ``dead_threshold`` are restarted at random encoder outputs of the batch.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups that divide the channel count."""
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResBlock(nn.Module):
    """Pre-activation residual block: (B, c_in, H, W) -> (B, c_out, H, W)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = group_norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = group_norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention (bottleneck of the 256x256 presets)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = group_norm(c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(2, 3).unbind(1)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.proj(out.transpose(1, 2).reshape(b, c, h, w))


def _mid(c: int, attn: bool) -> nn.Sequential:
    return nn.Sequential(ResBlock(c, c), *([AttnBlock(c)] if attn else []), ResBlock(c, c))


class Encoder(nn.Module):
    """(B, 3, H, W) -> (B, z_ch, H/f, W/f), f = 2**(len(ch_mult)-1)."""

    def __init__(self, z_ch: int, base: int, ch_mult: tuple[int, ...], n_res: int,
                 mid_attn: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, base, 3, padding=1)]
        c = base
        for level, mult in enumerate(ch_mult):
            for _ in range(n_res):
                layers.append(ResBlock(c, base * mult))
                c = base * mult
            if level < len(ch_mult) - 1:
                layers.append(nn.Conv2d(c, c, 4, stride=2, padding=1))  # exact halving
        layers += [_mid(c, mid_attn), group_norm(c), nn.SiLU(), nn.Conv2d(c, z_ch, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """(B, z_ch, h, w) -> (B, 3, h*f, w*f), mirror of Encoder."""

    def __init__(self, z_ch: int, base: int, ch_mult: tuple[int, ...], n_res: int,
                 mid_attn: bool) -> None:
        super().__init__()
        c = base * ch_mult[-1]
        layers: list[nn.Module] = [nn.Conv2d(z_ch, c, 3, padding=1), _mid(c, mid_attn)]
        for level, mult in reversed(list(enumerate(ch_mult))):
            for _ in range(n_res):
                layers.append(ResBlock(c, base * mult))
                c = base * mult
            if level > 0:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                           nn.Conv2d(c, c, 3, padding=1)]
        layers += [group_norm(c), nn.SiLU(), nn.Conv2d(c, 3, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class EMAQuantizer(nn.Module):
    """Vector quantizer with EMA codebook updates and dead-code restarts.

    Args:
        num_codes: codebook size K.
        dim: code dimension (= latent channels C).
        decay: EMA decay of code usage and sums.
        beta: commitment loss weight.
        dead_threshold: EMA usage below which a code is restarted.
        seed: seed of the generator that picks restart vectors.
    """

    def __init__(self, num_codes: int, dim: int, decay: float = 0.99, beta: float = 0.25,
                 dead_threshold: float = 1e-2, seed: int = 0) -> None:
        super().__init__()
        self.num_codes, self.dim = num_codes, dim
        self.decay, self.beta, self.dead_threshold = decay, beta, dead_threshold
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("codebook", torch.randn(num_codes, dim, generator=gen))
        self.register_buffer("usage", torch.ones(num_codes))
        self.register_buffer("code_sum", self.codebook.clone())
        # The codebook is re-initialized from the first training batch (data-dependent
        # init) so codes start where the encoder outputs are.
        # A float flag, not bool: DDP broadcasts buffers and gloo lacks bool support.
        self.register_buffer("initialized", torch.tensor(0.0))
        self.generator = torch.Generator().manual_seed(seed + 1)

    def nearest(self, h: Tensor) -> Tensor:
        """h: (N, C) -> (N,) int64 index of the nearest code (squared L2)."""
        d = (h.pow(2).sum(1, keepdim=True) - 2 * h @ self.codebook.T
             + self.codebook.pow(2).sum(1)[None])
        return d.argmin(dim=1)

    def quantize(self, h: Tensor) -> Tensor:
        """(B, C, h, w) -> nearest codebook vectors, same shape (no gradient tricks)."""
        flat = h.permute(0, 2, 3, 1).reshape(-1, self.dim)
        q = self.codebook[self.nearest(flat)]
        return q.reshape(h.shape[0], h.shape[2], h.shape[3], self.dim).permute(0, 3, 1, 2)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor, dict[str, float]]:
        """Quantize with a straight-through gradient; update the codebook when training.

        Returns:
            q_st (B, C, h, w), commitment loss (scalar), stats (perplexity, restarts).
        """
        flat = h.permute(0, 2, 3, 1).reshape(-1, self.dim)
        idx = self.nearest(flat.detach())
        onehot = F.one_hot(idx, self.num_codes).to(flat.dtype)  # (N, K)
        restarts = 0
        if self.training and float(self.initialized) == 0.0:
            with torch.no_grad():
                pick = torch.randint(0, flat.shape[0], (self.num_codes,), generator=self.generator)
                self.codebook.copy_(flat.detach()[pick.to(flat.device)])
                self.code_sum.copy_(self.codebook)
                self.initialized.fill_(1.0)
            idx = self.nearest(flat.detach())
            onehot = F.one_hot(idx, self.num_codes).to(flat.dtype)
        if self.training:
            with torch.no_grad():
                counts, sums = onehot.sum(0), onehot.T @ flat.detach()
                if dist.is_available() and dist.is_initialized():
                    # DDP: every rank updates the codebook from the global batch.
                    dist.all_reduce(counts)
                    dist.all_reduce(sums)
                self.usage.lerp_(counts, 1 - self.decay)
                self.code_sum.lerp_(sums, 1 - self.decay)
                # Laplace smoothing keeps unused codes from dividing by zero.
                n = self.usage.sum()
                usage = (self.usage + 1e-5) / (n + self.num_codes * 1e-5) * n
                self.codebook.copy_(self.code_sum / usage[:, None])
                dead = self.usage < self.dead_threshold
                restarts = int(dead.sum())
                if restarts:
                    pick = torch.randint(0, flat.shape[0], (restarts,), generator=self.generator)
                    fresh = flat.detach()[pick.to(flat.device)]
                    self.codebook[dead] = fresh
                    self.code_sum[dead] = fresh
                    self.usage[dead] = 1.0
        q = self.codebook[idx].reshape(h.shape[0], h.shape[2], h.shape[3], self.dim)
        q = q.permute(0, 3, 1, 2)
        commit = self.beta * F.mse_loss(h, q.detach())
        probs = onehot.mean(0)
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum()).item()
        return h + (q - h).detach(), commit, {"perplexity": perplexity, "restarts": restarts}


class VQVAE(nn.Module):
    """VQ-VAE with downsampling factor 2**(len(ch_mult) - 1).

    Args:
        latent_channels: C of the latents (= codebook dimension).
        num_codes: codebook size.
        base_channels: width of the first level.
        ch_mult: per-level width multipliers; one downsampling between levels.
        num_res_blocks: residual blocks per level.
        mid_attn: single-head self-attention in the bottleneck (256x256 presets).
        beta: commitment weight.
        seed: seed of the weight and codebook init and of the restart generator.
    """

    def __init__(self, latent_channels: int = 4, num_codes: int = 512, base_channels: int = 32,
                 ch_mult: tuple[int, ...] = (1, 2, 2), num_res_blocks: int = 1,
                 mid_attn: bool = False, beta: float = 0.25, seed: int = 0) -> None:
        super().__init__()
        self.config = dict(latent_channels=latent_channels, num_codes=num_codes,
                           base_channels=base_channels, ch_mult=tuple(ch_mult),
                           num_res_blocks=num_res_blocks, mid_attn=mid_attn, beta=beta, seed=seed)
        self.latent_channels = latent_channels
        self.downsample = 2 ** (len(ch_mult) - 1)
        self.encoder = Encoder(latent_channels, base_channels, ch_mult, num_res_blocks, mid_attn)
        self.decoder = Decoder(latent_channels, base_channels, ch_mult, num_res_blocks, mid_attn)
        self.quantizer = EMAQuantizer(num_codes, latent_channels, beta=beta, seed=seed)
        self.register_buffer("scale", torch.tensor(1.0))
        self._init_weights(seed)

    def _init_weights(self, seed: int) -> None:
        """PyTorch's default conv init, drawn from a seeded generator (not the global RNG)."""
        gen = torch.Generator().manual_seed(seed)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and not m.weight.is_meta:
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=gen)
                bound = 1.0 / math.sqrt(m.weight[0].numel())
                nn.init.uniform_(m.bias, -bound, bound, generator=gen)

    def encode(self, x: Tensor) -> Tensor:
        """x: (B, 3, H, W) in [-1, 1] -> (B, C, H/f, W/f) pre-quantization, unit variance."""
        return self.encoder(x) * self.scale

    def decode(self, z: Tensor, quantize: bool = True) -> Tensor:
        """z: (B, C, h, w) scaled latents -> (B, 3, h*f, w*f) images clamped to [-1, 1]."""
        h = z / self.scale
        if quantize:
            h = self.quantizer.quantize(h)
        return self.decoder(h).clamp(-1.0, 1.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, dict[str, float]]:
        """Training pass: (reconstruction (B, 3, H, W) unclamped, commitment loss, stats)."""
        q, commit, stats = self.quantizer(self.encoder(x))
        return self.decoder(q), commit, stats


VQVAE_PRESETS: dict[str, Callable[..., VQVAE]] = {
    # 32x32 Fashion-MNIST on CPU: latents (4, 8, 8). Narrow at full resolution, where
    # convolutions cost most: about 1 train step/s at batch 64 on one core.
    "vq-f4-c4": partial(VQVAE, latent_channels=4, num_codes=512, base_channels=16,
                        ch_mult=(1, 2, 4), num_res_blocks=1),
    # 256x256: latents (4 or 8, 32, 32), the paper's custom f8 VQ autoencoders.
    "vq-f8-c4": partial(VQVAE, latent_channels=4, num_codes=16384, base_channels=128,
                        ch_mult=(1, 1, 2, 4), num_res_blocks=2, mid_attn=True),
    "vq-f8-c8": partial(VQVAE, latent_channels=8, num_codes=16384, base_channels=128,
                        ch_mult=(1, 1, 2, 4), num_res_blocks=2, mid_attn=True),
}


def build_vqvae(name: str, **overrides) -> VQVAE:
    """Build a VQ-VAE preset by its VQVAE_PRESETS key."""
    if name not in VQVAE_PRESETS:
        raise ValueError(f"unknown VQ-VAE preset {name!r}; choose one of {sorted(VQVAE_PRESETS)}")
    return VQVAE_PRESETS[name](**overrides)


def vqvae_train_step(model: VQVAE, x: Tensor, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """One optimizer step on x: (B, 3, H, W) in [-1, 1]; returns loss components."""
    model.train()
    recon, commit, stats = model(x)
    rec = F.mse_loss(recon, x)
    loss = rec + commit
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": loss.item(), "recon": rec.item(), "commit": commit.item(), **stats}


@torch.no_grad()
def fit_latent_scale(model: VQVAE, x: Tensor, batch_size: int = 256) -> float:
    """Set model.scale = 1 / std of the unscaled encoder output on x; return it."""
    model.eval()
    hs = [model.encoder(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]
    std = torch.cat(hs).float().std().item()
    if not math.isfinite(std) or std <= 0:
        raise ValueError(f"cannot fit latent scale: encoder output std is {std}")
    model.scale.fill_(1.0 / std)
    return 1.0 / std


def save_vqvae(model: VQVAE, path: str, preset: str) -> None:
    """Save the resolved config, preset name, scale and weights (loadable weights_only)."""
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in model.config.items()}
    torch.save({"preset": preset, "config": cfg, "scale": float(model.scale),
                "state_dict": model.state_dict()}, path)


def load_vqvae(path: str, map_location: str | torch.device = "cpu") -> VQVAE:
    """Load a checkpoint written by save_vqvae (torch.load with weights_only=True)."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    cfg = dict(ckpt["config"])
    cfg["ch_mult"] = tuple(cfg["ch_mult"])
    model = VQVAE(**cfg)
    model.load_state_dict(ckpt["state_dict"])
    model.preset = ckpt["preset"]
    return model.eval()


def psnr(x: Tensor, y: Tensor) -> float:
    """Mean per-image PSNR (dB) of images in [-1, 1] (peak-to-peak range 2)."""
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return (10 * torch.log10(4.0 / mse)).mean().item()


def images_to_model(images) -> Tensor:
    """The one uint8 -> model-input conversion (VQ-VAE encoder input, [-1, 1]).

    Args:
        images: (B, H, W, 3) uint8 array or tensor, RGB.

    Returns:
        (B, 3, H, W) float32 in [-1, 1] (``x / 127.5 - 1``).
    """
    x = torch.as_tensor(images)
    # Contiguous NCHW: a permuted (channels-last) input turned every layer of the VQ-VAE
    # channels-last, 1.12x slower to train on 2 CPU threads (6 alternating runs, issue 13).
    return x.permute(0, 3, 1, 2).contiguous().float().div(127.5).sub(1.0)


def model_to_images(x: Tensor):
    """The one model-output -> uint8 conversion (inverse of :func:`images_to_model`).

    Args:
        x: (B, 3, H, W) float in about [-1, 1] (clamped here), any device.

    Returns:
        (B, H, W, 3) uint8 numpy array, RGB, rounded.
    """
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
