"""Shared pieces of the pruning.stats tests: an independent flow-matching loss, a tiny
conditional net with BatchNorm and label dropout, data, and per-sample gradients by a
batch-size-1 autograd loop (the reference the batched statistics are checked against)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pruning import stats


def flow_loss(model, x1, y, t, noise):
    """Independent flow-matching loss: x_t = t x1 + (1-t) noise, target x1 - noise."""
    tb = t.reshape(-1, *([1] * (x1.dim() - 1)))
    xt = tb * x1 + (1 - tb) * noise
    pred = model(xt, t, y)
    return (pred - (x1 - noise)).pow(2).flatten(1).mean(dim=1)


class TinyNet(nn.Module):
    """Conv net with a BatchNorm (buffers), a frozen param and label dropout."""

    def __init__(self, channels: int = 2, classes: int = 3, drop: float = 1.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels + 1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, channels, 3, padding=1)
        self.emb = nn.Embedding(classes + 1, 8)
        self.frozen = nn.Parameter(torch.ones(8), requires_grad=False)
        self.register_buffer("shift", torch.linspace(-0.5, 0.5, 8))
        self.classes, self.drop = classes, drop
        with torch.no_grad():  # non-trivial running stats so eval-mode BN matters
            self.bn.running_mean.uniform_(-0.3, 0.3)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x, t, y):
        tmap = t.reshape(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        h = torch.tanh(self.bn(self.conv1(torch.cat([x, tmap], 1))))
        if y is not None:
            if self.training and self.drop > 0:  # label dropout: must be off in eval
                y = torch.full_like(y, self.classes)
            h = h + (self.emb(y) * self.frozen + self.shift)[:, :, None, None]
        return self.conv2(h)


def tiny_data(b=6, c=2, hw=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, hw, hw, generator=g)
    y = torch.randint(0, 3, (b,), generator=g)
    ids = torch.arange(100, 100 + b)
    return x, y, ids


def loop_grads(model, x, y, ids, k, seed, per_draw=False, noise_mode="per_sample"):
    """Per-sample gradients by a batch-size-1 autograd loop, float64 (B, [K,] P)."""
    model.eval()
    t, noise = stats.fixed_draws(ids, k, tuple(x.shape[1:]), seed, noise=noise_mode)
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(x.shape[0]):
        yi = y[i : i + 1] if y is not None else None
        draws = []
        for j in range(k):
            loss = flow_loss(model, x[i : i + 1], yi, t[i, j : j + 1], noise[i, j : j + 1])[0]
            gs = torch.autograd.grad(loss, params)
            draws.append(torch.cat([g.reshape(-1) for g in gs]).double().numpy())
        draws = np.stack(draws)
        rows.append(draws if per_draw else draws.mean(axis=0))
    return np.stack(rows)
