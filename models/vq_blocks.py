"""Convolutional encoder/decoder blocks of the VQ-VAE (see models/vqvae.py)."""
from __future__ import annotations

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
