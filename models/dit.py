"""Diffusion Transformer (Peebles & Xie 2023) for flow matching on VQ-VAE latents.

adaLN-Zero blocks, fixed 2D sin-cos position embeddings, a timestep embedder and a
class embedder with a null class (index ``num_classes``) for classifier-free
guidance. The forward pass is written for ``torch.func`` (functional_call + vmap +
grad): no in-place ops on activations, no data-dependent Python control flow, and
label dropout only in training mode (or with an explicit ``drop_mask``).
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The flow-matching time t in [0, 1] is multiplied by this before the sinusoidal
# embedding so that its frequencies span the same range as DiT's integer steps.
TIME_SCALE = 1000.0


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation. x: (B, N, D); shift, scale: (B, D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def sincos_pos_embed_2d(dim: int, grid: int) -> Tensor:
    """Fixed 2D sin-cos position embedding, (grid*grid, dim), rows in raster order."""
    if dim % 4 != 0:
        raise ValueError(f"hidden size {dim} must be divisible by 4 for 2D sin-cos embedding")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4.0))
    coords = torch.arange(grid, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")

    def embed_1d(pos: Tensor) -> Tensor:
        out = pos.reshape(-1, 1) * omega.reshape(1, -1)
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    # First half encodes the column (x), second half the row (y), as in MAE/DiT.
    return torch.cat([embed_1d(xx), embed_1d(yy)], dim=1).float()


class TimestepEmbedder(nn.Module):
    """Embeds t: (B,) float in [0, 1] -> (B, hidden) via sinusoids and an MLP."""

    def __init__(self, hidden_size: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(
            nn.Linear(freq_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: Tensor) -> Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(
            -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half
        )
        args = (t.float() * TIME_SCALE).unsqueeze(-1) * freqs
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class embedding table with a null class at index ``num_classes`` (CFG)."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.table = nn.Embedding(num_classes + 1, hidden_size)

    def forward(self, y: Tensor, drop_mask: Tensor | None) -> Tensor:
        """y: (B,) int64; drop_mask: (B,) bool (True -> null class) or None."""
        if drop_mask is not None:
            y = torch.where(drop_mask, torch.full_like(y, self.num_classes), y)
        return self.table(y)


class Attention(nn.Module):
    """Multi-head self-attention through F.scaled_dot_product_attention."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"hidden size {dim} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        # naive=True swaps in an explicit softmax(QK^T)V, used by the benchmark baseline.
        self.naive = False

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, hd)
        if self.naive:
            attn = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
            out = attn.softmax(dim=-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        mlp_hidden = int(hidden_size * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, mlp_hidden),
            nn.GELU(approximate="tanh"),
            nn.Linear(mlp_hidden, hidden_size),
        )
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """x: (B, N, D) tokens; c: (B, D) conditioning."""
        sh_a, sc_a, g_a, sh_m, sc_m, g_m = self.adaLN(c).chunk(6, dim=1)
        x = x + g_a.unsqueeze(1) * self.attn(modulate(self.norm1(x), sh_a, sc_a))
        return x + g_m.unsqueeze(1) * self.mlp(modulate(self.norm2(x), sh_m, sc_m))


class FinalLayer(nn.Module):
    def __init__(self, hidden_size: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """Diffusion Transformer predicting the flow-matching velocity.

    Args:
        input_size: latent side h (= w).
        patch_size: patch side p; input_size must be divisible by it.
        in_channels: latent channels C.
        hidden_size, depth, num_heads, mlp_ratio: transformer size.
        num_classes: 0 for unconditional; otherwise labels 0..num_classes-1 and the
            null class num_classes.
        class_dropout_prob: label dropout in training mode (classifier-free guidance).
        learn_sigma: doubles the output channels as in the original DiT (only kept so
            parameter counts can be compared with the paper; flow matching ignores it).
        seed: seed of the weight initialization (the global RNG is not used).
    """

    OUTPUT_LAYER = ("final.",)   # parameter-name prefixes of the output layer (last-layer GraNd)

    def __init__(
        self,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_classes: int = 0,
        class_dropout_prob: float = 0.1,
        learn_sigma: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if input_size % patch_size != 0:
            raise ValueError(f"input_size {input_size} not divisible by patch_size {patch_size}")
        if num_classes < 0 or not 0.0 <= class_dropout_prob < 1.0:
            raise ValueError("num_classes must be >= 0 and class_dropout_prob in [0, 1)")
        self.config = dict(
            input_size=input_size, patch_size=patch_size, in_channels=in_channels,
            hidden_size=hidden_size, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
            num_classes=num_classes, class_dropout_prob=class_dropout_prob,
            learn_sigma=learn_sigma, seed=seed,
        )
        self.input_size, self.patch_size = input_size, patch_size
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.num_classes = num_classes
        self.class_dropout_prob = class_dropout_prob
        # Optional generator for label dropout (set by the trainer for reproducibility).
        self.label_generator: torch.Generator | None = None
        self.grid = input_size // patch_size
        self.x_embed = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size)
        self.t_embed = TimestepEmbedder(hidden_size)
        self.y_embed = (
            LabelEmbedder(num_classes, hidden_size, class_dropout_prob) if num_classes > 0 else None
        )
        self.register_buffer(
            "pos_embed", sincos_pos_embed_2d(hidden_size, self.grid).unsqueeze(0), persistent=False
        )
        self.blocks = nn.ModuleList(
            [DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)]
        )
        self.final = FinalLayer(hidden_size, patch_size, self.out_channels)
        self._init_weights(seed)

    def _init_weights(self, seed: int) -> None:
        # On the meta device (parameter counting) there is nothing to initialize.
        gen = None if self.x_embed.weight.is_meta else torch.Generator(
            device=self.x_embed.weight.device).manual_seed(seed)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight, generator=gen)
                nn.init.zeros_(m.bias)
        w = self.x_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1), generator=gen)
        nn.init.zeros_(self.x_embed.bias)
        if self.y_embed is not None:
            nn.init.normal_(self.y_embed.table.weight, std=0.02, generator=gen)
        for lin in (self.t_embed.mlp[0], self.t_embed.mlp[2]):
            nn.init.normal_(lin.weight, std=0.02, generator=gen)
        # adaLN-Zero: every residual branch and the output start at zero.
        for blk in self.blocks:
            nn.init.zeros_(blk.adaLN[-1].weight)
            nn.init.zeros_(blk.adaLN[-1].bias)
        for lin in (self.final.adaLN[-1], self.final.linear):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def unpatchify(self, x: Tensor) -> Tensor:
        """(B, N, p*p*C) -> (B, C, H, W)."""
        p, g, c = self.patch_size, self.grid, self.out_channels
        x = x.reshape(x.shape[0], g, g, p, p, c)
        return torch.einsum("bhwpqc->bchpwq", x).reshape(x.shape[0], c, g * p, g * p)

    def forward(
        self, x: Tensor, t: Tensor, y: Tensor | None = None, *, drop_mask: Tensor | None = None
    ) -> Tensor:
        """Predict the velocity.

        Args:
            x: (B, C, H, W) latents at time t.
            t: (B,) float in [0, 1] (0 = noise, 1 = data).
            y: (B,) int64 labels, or None for an unconditional model.
            drop_mask: (B,) bool, True replaces the label by the null class. When None,
                labels are dropped with ``class_dropout_prob`` only in training mode.

        Returns:
            (B, out_channels, H, W) velocity.
        """
        h = self.x_embed(x).flatten(2).transpose(1, 2) + self.pos_embed  # (B, N, D)
        c = self.t_embed(t)
        if self.y_embed is not None:
            if y is None:
                raise ValueError("class-conditional DiT needs labels y (use num_classes for null)")
            if drop_mask is None and self.training and self.class_dropout_prob > 0:
                u = torch.rand(y.shape, generator=self.label_generator,
                               device=self.label_generator.device if self.label_generator else y.device)
                drop_mask = u.to(y.device) < self.class_dropout_prob
            c = c + self.y_embed(y, drop_mask)
        for blk in self.blocks:
            h = blk(h, c)
        return self.unpatchify(self.final(h, c))

    def forward_with_cfg(self, x: Tensor, t: Tensor, y: Tensor | None, cfg_scale: float) -> Tensor:
        """Classifier-free guidance: v_null + s * (v_cond - v_null); no label dropout.

        x: (B, C, H, W); t: (B,); y: (B,) int64. Unconditional models ignore cfg_scale.
        """
        if self.y_embed is None or y is None:
            return self.forward(x, t, None)
        b = x.shape[0]
        null = torch.full_like(y, self.num_classes)
        keep = torch.zeros(2 * b, dtype=torch.bool, device=y.device)
        v = self.forward(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]), drop_mask=keep)
        v_cond, v_null = v[:b], v[b:]
        return v_null + cfg_scale * (v_cond - v_null)


def _preset(depth: int, hidden: int, patch: int, heads: int) -> Callable[..., DiT]:
    return partial(DiT, depth=depth, hidden_size=hidden, patch_size=patch, num_heads=heads)


_SIZES = {"XL": (28, 1152, 16), "L": (24, 1024, 16), "B": (12, 768, 12), "S": (12, 384, 6)}
MODELS: dict[str, Callable[..., DiT]] = {
    f"DiT-{s}/{p}": _preset(d, h, p, n) for s, (d, h, n) in _SIZES.items() for p in (2, 4, 8)
}
# CPU presets: Tiny for small real runs, Micro for tests and the quickstart.
MODELS["DiT-Tiny/2"] = _preset(4, 128, 2, 4)
MODELS["DiT-Micro/2"] = _preset(2, 64, 2, 4)


def build_dit(
    name: str, input_size: int, in_channels: int, num_classes: int = 0,
    class_dropout_prob: float = 0.1, **overrides,
) -> DiT:
    """Build a DiT preset by its MODELS key, e.g. build_dit("DiT-Micro/2", 8, 4, 10)."""
    if name not in MODELS:
        raise ValueError(f"unknown DiT preset {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](
        input_size=input_size, in_channels=in_channels, num_classes=num_classes,
        class_dropout_prob=class_dropout_prob, **overrides,
    )
