"""Split-half statistics: each proxy statistic from all K draws and from each half of them.

The proxy measures every statistic at K fixed draws (:func:`pruning.stats.fixed_draws`).
Half ``a`` is draws ``[0, K // 2)``, half ``b`` draws ``[K // 2, K)``; two halves of one
proxy's draws are two measurements of the same per-sample score, whose rank agreement is
the score's split-half reliability (``eval.analysis.reliability.split_half_rho``). With
K < 2 there are no halves (``None``).

The functions here compute the per-draw quantities once (the same draws, hence the same
random streams, as :mod:`pruning.stats`) and combine them three ways:

- loss (``loss_traj``, ``loss_last``) and GraNd (``grad_norm``): the (B, K) per-draw
  values, averaged over all draws (the full statistic, equal to
  :func:`pruning.stats.per_sample_losses` / :func:`pruning.stats.per_sample_grad_norms`
  up to float rounding) and over each half (:func:`split_means`);
- MoSo: each half is a MoSo of its own: g_z^h = gradient of the sample's mean loss over
  the half's draws, g^h = the dataset mean of g_z^h, and the score from (g^h, g_z^h) with
  the same N. Nothing of the other half enters a half's score (not its gradients, not its
  mean gradient), so the two halves are independent measurements given the proxy. The
  full g_z (gradient of the K-draw mean loss) is the draw-weighted combination
  (|a| g_z^a + |b| g_z^b) / K, and likewise g, so the full score is
  :func:`pruning.stats.moso_terms`' up to float rounding without a third gradient pass.

Memory: per-(sample, draw) values are (B, K) scalars; the MoSo pass holds both halves'
per-sample gradients of ``max(1, chunk // 2)`` samples at once (``chunk`` x P floats,
as :func:`pruning.stats.moso_terms`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pruning.stats import (LossFn, chunked_grads, eval_mode, fixed_draws, per_sample_grad_norm_draws,
                           split_tensors)

HALVES = ("a", "b")
FULL = "full"


def half_key(stat: str, half: str) -> str:
    """Name of a statistic's half: ``half_key("moso", "a") == "moso_half_a"``."""
    if half not in HALVES:
        raise ValueError(f"half must be one of {HALVES}, got {half!r}")
    return f"{stat}_half_{half}"


def half_bounds(k: int) -> dict[str, tuple[int, int]]:
    """Draw index ranges ``{"a": (0, K//2), "b": (K//2, K)}``; ``{}`` for K < 2."""
    if k < 2:
        return {}
    return {"a": (0, k // 2), "b": (k // 2, k)}


def split_means(values: Tensor) -> dict[str, Tensor]:
    """Per-draw values averaged over all draws and over each half.

    Args:
        values: (B, K) per-(sample, draw) values.

    Returns:
        ``{"full": (B,), "a": (B,), "b": (B,)}`` (no halves for K < 2). The full mean
        adds the draws in draw order, as :func:`pruning.stats.per_sample_losses` does.
    """
    k = values.shape[1]
    full = torch.zeros_like(values[:, 0])
    for j in range(k):
        full += values[:, j]
    out = {FULL: full / k}
    for half, (lo, hi) in half_bounds(k).items():
        out[half] = values[:, lo:hi].mean(dim=1)
    return out


def per_sample_loss_draws(
    model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor | None, ids: Tensor, k: int, seed: int,
    t_mode: str = "shared_grid", noise: str = "per_sample",
) -> Tensor:
    """Flow loss of each sample at each of its K fixed draws (no gradients).

    Args: as :func:`pruning.stats.per_sample_losses` (x (B, C, H, W), y (B,) or None,
        ids (B,)).

    Returns:
        (B, K) float64 on x.device; its :func:`split_means` ``"full"`` is
        ``per_sample_losses`` bit for bit.
    """
    t, eps = fixed_draws(ids.to(x.device), k, tuple(x.shape[1:]), seed, t_mode, noise)
    out = torch.zeros(x.shape[0], k, dtype=torch.float64, device=x.device)
    with eval_mode(model) as inner, torch.no_grad():
        for j in range(k):
            out[:, j] = loss_fn(inner, x, y, t[:, j], eps[:, j]).double()
    return out


def gradient_sum_halves(
    model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor | None, ids: Tensor, k: int,
    seed: int, chunk: int = 64, t_mode: str = "shared_grid", noise: str = "per_sample",
) -> dict[str, Tensor]:
    """MoSo pass 1 per half: sum over the batch of g_z^h (gradient of the half-mean loss).

    Sums, so DDP ranks can all-reduce each and divide by the global N; combine them into
    the full sum with :func:`combine_halves`. One ordinary backward per chunk and half.

    Args: as :func:`pruning.stats.gradient_sum`; K >= 2.

    Returns:
        ``{"a": (P,), "b": (P,)}`` float64 on x.device, in the layout of
        ``pruning.stats.gradient_sum``.
    """
    bounds = half_bounds(k)
    if not bounds:
        raise ValueError(f"split halves need k >= 2 draws, got {k}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    t, eps = fixed_draws(ids.to(x.device), k, tuple(x.shape[1:]), seed, t_mode, noise)
    out = {}
    with eval_mode(model) as inner:
        params = [p for p in inner.parameters() if p.requires_grad]
        for half, (lo, hi) in bounds.items():
            h = hi - lo
            total = [torch.zeros(p.shape, dtype=torch.float64, device=p.device) for p in params]
            for s in range(0, x.shape[0], chunk):
                rows = slice(s, min(s + chunk, x.shape[0]))
                xs = x[rows].repeat_interleave(h, dim=0)
                ys = y[rows].repeat_interleave(h, dim=0) if y is not None else None
                loss = loss_fn(inner, xs, ys, t[rows, lo:hi].reshape(-1),
                               eps[rows, lo:hi].reshape(-1, *x.shape[1:])).sum() / h
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                for acc, g in zip(total, grads):
                    if g is not None:
                        acc += g.double()
            out[half] = torch.cat([v.reshape(-1) for v in total])
    return out


def combine_halves(halves: dict[str, Tensor], k: int) -> Tensor:
    """The full-draw value of a quantity linear in the draws: (|a| v_a + |b| v_b) / K."""
    bounds = half_bounds(k)
    return sum((hi - lo) * halves[h] for h, (lo, hi) in bounds.items()) / k


def moso_terms_halves(
    model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor | None, ids: Tensor, k: int,
    seed: int, g_means: dict[str, Tensor], chunk: int = 64, t_mode: str = "shared_grid",
    noise: str = "per_sample",
) -> dict[str, tuple[Tensor, Tensor]]:
    """MoSo pass 2 for the full draws and each half, from one set of half gradients.

    Args:
        g_means: ``{"full", "a", "b"}`` -> (P,) dataset-mean gradient of that variant
            (``"full"`` = :func:`combine_halves` of the halves' means).
        chunk: per-sample gradients held at once: ``max(1, chunk // 2)`` samples, both halves.
        Others as :func:`pruning.stats.moso_terms`; K >= 2.

    Returns:
        ``{variant: (sq_norms (B,), dots (B,))}`` float64 on x.device, with
        ``sq_norms = ||g_z^v||^2`` and ``dots = <g^v, g_z^v>`` for v in full, a, b.
    """
    bounds = half_bounds(k)
    if not bounds:
        raise ValueError(f"split halves need k >= 2 draws, got {k}")
    t, eps = fixed_draws(ids.to(x.device), k, tuple(x.shape[1:]), seed, t_mode, noise)
    b = x.shape[0]
    variants = (FULL, *bounds)
    terms = {v: (torch.zeros(b, dtype=torch.float64, device=x.device),
                 torch.zeros(b, dtype=torch.float64, device=x.device)) for v in variants}
    sub = max(1, chunk // 2)
    with eval_mode(model) as inner:
        params, _ = split_tensors(inner)
        sizes = [p.numel() for p in params.values()]
        pieces = {}
        for v in variants:
            if g_means[v].numel() != sum(sizes):
                raise ValueError(f"g_mean has {g_means[v].numel()} entries, model has {sum(sizes)}")
            flat = g_means[v].to(x.device, torch.float64)
            pieces[v] = dict(zip(params, torch.split(flat, sizes)))
        passes = [chunked_grads(inner, loss_fn, x, y, t[:, lo:hi], eps[:, lo:hi], sub)
                  for lo, hi in bounds.values()]
        for (rows, ga), (_, gb) in zip(*passes):
            for name in ga:
                flat = {"a": ga[name].reshape(ga[name].shape[0], -1).double(),
                        "b": gb[name].reshape(gb[name].shape[0], -1).double()}
                flat[FULL] = combine_halves(flat, k)
                for v in variants:
                    sq, dots = terms[v]
                    sq[rows] += flat[v].pow(2).sum(dim=1)
                    dots[rows] += flat[v] @ pieces[v][name]
    return terms
