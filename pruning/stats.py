"""Proxy-training statistics recorder: per-sample losses, gradient norms, MoSo terms.

The orchestrator's proxy stage calls these functions on batches of
(latents, labels, ids) at logged proxy checkpoints. The flow loss is passed in
(`LossFn`), so pruning never imports models. Every function:

- evaluates every sample at K fixed draws: the t values are a stratified grid
  t_j = (j + u) / K, j = 0..K-1, shared by every sample (one offset u per seed), and
  the noise is a pure function of (seed, id), or of the seed only. Results do not depend on batch
  composition, shard or device, and every sample is ranked at the same timesteps
  (the per-sample flow loss varies O(1) with t, so per-sample t would mostly rank
  the t a sample drew; the paper's code scores all samples at one shared t).
  ``t_mode="per_sample"`` keeps the former per-(seed, id) t draws, for
  benchmarks/bench_stat_stability.py only;
- ``noise="shared"`` (config ``proxy.noise``) also shares the noise: draw j uses one
  noise eps_j, a function of the seed only, for every sample (common random numbers).
  Sound because every sample is then ranked under identical (t_j, eps_j) conditions,
  so score differences come from the samples (and the model), not from who drew the
  easier noise; and eps_j is drawn independently of the data, so no sample is
  favoured in expectation. Caveat: the scores are conditional on one noise
  realisation per draw (a sample whose x1 happens to align with eps_j is scored at
  that alignment), and K draws average over only K realisations; another seed gives
  another realisation (split-half = two seeds). ``noise="per_sample"`` (a stream per
  (seed, id)) keeps the former noise;
- runs the model in eval mode (no label dropout) and restores its mode after;
- works on any shard (DDP: each rank passes its own ids; the caller gathers
  per-id results; `gradient_sum` returns a sum so ranks can all-reduce it);
- bounds memory by `chunk` per-sample gradients held at once (chunk x P floats),
  computed with torch.func (functional_call + vmap + grad), not a loop.

Per-sample gradient conventions (K draws per sample):
- GraNd: mean over the K draws of ||grad loss(x, t_j, noise_j)||, over all parameters
  or over the output layer only (``only``; the proxy's default, with more draws).
- MoSo: g_z = grad of the sample's K-draw mean loss; g = mean over the dataset.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

LossFn = Callable[[nn.Module, Tensor, Tensor, Tensor, Tensor], Tensor]
"""(model, x1 (B,C,H,W), y (B,) or None, t (B,), noise (B,C,H,W)) -> (B,) loss."""


T_MODES = ("shared_grid", "per_sample")
NOISE_MODES = ("per_sample", "shared")
_GRID_KEY = 0x5EED   # spawn key of the grid-offset stream, distinct from every (seed, id) stream
_NOISE_KEY = 0x5EEE  # spawn key of the shared-noise stream, distinct from the above


def grid_offset(seed: int) -> float:
    """The offset u in [0, 1) of the shared stratified t grid of ``seed``."""
    ss = np.random.SeedSequence(seed, spawn_key=(_GRID_KEY,))
    return float(np.random.default_rng(ss).random())


def shared_noise(k: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """The K noises of ``noise="shared"``: (K, *shape) float32 N(0, I), a function of seed only."""
    ss = np.random.SeedSequence(seed, spawn_key=(_NOISE_KEY,))
    return np.random.default_rng(ss).standard_normal((k, *shape), dtype=np.float32)


def fixed_draws(ids: Tensor, k: int, shape: tuple[int, ...], seed: int,
                t_mode: str = "shared_grid", noise: str = "per_sample") -> tuple[Tensor, Tensor]:
    """The K fixed (t, noise) draws of every sample, a function of (seed, id) only.

    With ``t_mode="shared_grid"`` (default) every sample gets the same t values, one
    per stratum of [0, 1): t_j = (j + u) / K with u = :func:`grid_offset` (seed). The
    noise comes from the sample's own stream ``default_rng([seed, id])`` (which first
    yields the K t values of ``"per_sample"``, skipped here, so both modes share the
    noise). ``"per_sample"`` uses those K per-sample t values instead (the former
    behaviour). With ``noise="shared"`` the K noises come from one stream of the seed
    (:func:`shared_noise`) and every sample gets the same ones (common random
    numbers, see the module docstring). Two seeds give disjoint draws (another grid
    offset, other noise) in every mode.

    Args:
        ids: (B,) int64 dataset ids (any device).
        k: draws per sample.
        shape: per-sample latent shape (C, H, W).
        seed: experiment seed (>= 0).
        t_mode: ``"shared_grid"`` or ``"per_sample"``.
        noise: ``"per_sample"`` (a stream per (seed, id)) or ``"shared"`` (one per seed).

    Returns:
        t: (B, K) float32 in [0, 1); noise: (B, K, *shape) float32 N(0, I);
        both on ids.device.
    """
    if seed < 0 or k < 1:
        raise ValueError(f"need seed >= 0 and k >= 1, got seed={seed}, k={k}")
    if t_mode not in T_MODES:
        raise ValueError(f"t_mode must be one of {T_MODES}, got {t_mode!r}")
    if noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {NOISE_MODES}, got {noise!r}")
    id_list = ids.detach().cpu().to(torch.int64).tolist()
    t = np.empty((len(id_list), k), dtype=np.float32)
    eps = np.empty((len(id_list), k, *shape), dtype=np.float32)
    common = shared_noise(k, shape, seed) if noise == "shared" else None
    for row, sample_id in enumerate(id_list):
        if sample_id < 0:
            raise ValueError(f"ids must be >= 0, got {sample_id}")
        # One independent stream per (seed, id): reproducible on every rank.
        gen = np.random.default_rng([seed, sample_id])
        t[row] = gen.random(k, dtype=np.float32)
        if common is None:
            eps[row] = gen.standard_normal((k, *shape), dtype=np.float32)
        else:
            eps[row] = common
    if t_mode == "shared_grid":
        grid = (np.arange(k, dtype=np.float64) + grid_offset(seed)) / k
        t[:] = np.minimum(grid.astype(np.float32), np.nextafter(np.float32(1), np.float32(0)))
    return torch.from_numpy(t).to(ids.device), torch.from_numpy(eps).to(ids.device)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Unwrap DDP, switch to eval mode (no label dropout), restore afterwards."""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    was_training = inner.training
    inner.eval()
    try:
        yield inner
    finally:
        inner.train(was_training)


class _Functional:
    """Callable stand-in for `model` that runs it with the given tensors.

    loss_fn calls `model(x, t, y)`; under torch.func the parameters must be the
    (possibly batched) tensors we differentiate, so the call is routed through
    functional_call. Other attribute reads fall through to the real model.
    """

    def __init__(self, model: nn.Module, tensors: dict[str, Tensor]) -> None:
        self._model = model
        self._tensors = tensors

    def __call__(self, *args, **kwargs):
        return functional_call(self._model, self._tensors, args, kwargs)

    def __getattr__(self, name: str):
        return getattr(self._model, name)


def split_tensors(model: nn.Module, only: tuple[str, ...] | None = None,
                   ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(trainable params, everything else: frozen params and buffers), detached.

    ``only``: parameter-name prefixes to differentiate (None = every trainable one);
    the others are held fixed like buffers.
    """
    params, rest = {}, {}
    for name, p in model.named_parameters():
        keep = p.requires_grad and (only is None or name.startswith(only))
        (params if keep else rest)[name] = p.detach()
    for name, b in model.named_buffers():
        rest[name] = b.detach()
    return params, rest


def _per_sample_grad_fn(model: nn.Module, loss_fn: LossFn, has_y: bool) -> Callable:
    """vmapped fn(params, rest, x, y, t, noise) -> per-sample grads dict.

    Each vmapped item is one sample x1 (C,H,W) with its own draws t (K,) and
    noise (K,C,H,W); its loss is the mean over its K draws.
    """

    def item_loss(params, rest, x1, y, t, noise):
        kk = t.shape[0]
        fmodel = _Functional(model, {**params, **rest})
        xk = x1.unsqueeze(0).expand(kk, *x1.shape)
        yk = y.unsqueeze(0).expand(kk) if has_y else None
        return loss_fn(fmodel, xk, yk, t, noise).mean()

    return vmap(grad(item_loss), in_dims=(None, None, 0, 0 if has_y else None, 0, 0))


def chunked_grads(
    model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor | None, t: Tensor, noise: Tensor,
    chunk: int, only: tuple[str, ...] | None = None,
) -> Iterator[tuple[slice, dict[str, Tensor]]]:
    """Yield (rows, {name: (c, *param.shape) grads}) for chunks of <= chunk items.

    ``only``: parameter-name prefixes to differentiate (see `split_tensors`).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    params, rest = split_tensors(model, only)
    if not params:
        raise ValueError(f"no trainable parameter name starts with {only}")
    fn = _per_sample_grad_fn(model, loss_fn, y is not None)
    for s in range(0, x.shape[0], chunk):
        rows = slice(s, min(s + chunk, x.shape[0]))
        yc = y[rows] if y is not None else None
        # Fused attention kernels have no vmap batching rule and fall back to a
        # per-sample loop (measured 9x slower on DiT-Micro); the math kernel
        # decomposes into batched matmul/softmax.
        with sdpa_kernel([SDPBackend.MATH]):
            grads = fn(params, rest, x[rows], yc, t[rows], noise[rows])
        yield rows, grads


def per_sample_losses(
    model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor | None, ids: Tensor, k: int, seed: int,
    t_mode: str = "shared_grid", noise: str = "per_sample",
) -> Tensor:
    """Flow loss of each sample, mean over its K fixed draws (no gradients).

    Args:
        model: the proxy model (DDP-wrapped or not); run in eval mode.
        loss_fn: per-sample loss, see LossFn.
        x: (B, C, H, W) latents; y: (B,) int64 labels or None; ids: (B,) int64.
        k: draws per sample; seed: experiment seed.
        t_mode, noise: how t and the noise are drawn, see `fixed_draws`.

    Returns:
        (B,) float64 on x.device.
    """
    t, eps = fixed_draws(ids.to(x.device), k, tuple(x.shape[1:]), seed, t_mode, noise)
    out = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    with eval_mode(model) as inner, torch.no_grad():
        for j in range(k):
            out += loss_fn(inner, x, y, t[:, j], eps[:, j]).double()
    return out / k


def per_sample_grad_norms(
    model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor | None, ids: Tensor, k: int,
    seed: int, chunk: int = 64, t_mode: str = "shared_grid", noise: str = "per_sample",
    only: tuple[str, ...] | None = None,
) -> Tensor:
    """GraNd: mean over K draws of the per-sample gradient norm.

    Args:
        model, loss_fn, x, y, ids, k, seed, t_mode, noise: as `per_sample_losses`.
        chunk: per-(sample, draw) gradients held at once (memory chunk x P).
        only: parameter-name prefixes of the gradient (None = all parameters). The
            output layer alone (as DeepCore's GraNd) costs a fraction of a full
            backward, so more draws fit in the same time (proxy.grand_params).

    Returns:
        (B,) float64 on x.device.
    """
    return per_sample_grad_norm_draws(model, loss_fn, x, y, ids, k, seed, chunk, t_mode, noise,
                                      only).mean(dim=1)


def per_sample_grad_norm_draws(
    model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor | None, ids: Tensor, k: int,
    seed: int, chunk: int = 64, t_mode: str = "shared_grid", noise: str = "per_sample",
    only: tuple[str, ...] | None = None,
) -> Tensor:
    """Per-sample gradient norm at each of the K draws (GraNd before the mean).

    Args: as :func:`per_sample_grad_norms` (``chunk`` per-(sample, draw)
        gradients held at once; ``only`` parameter-name prefixes).

    Returns:
        (B, K) float64 on x.device; its mean over K is ``per_sample_grad_norms``.
    """
    b = x.shape[0]
    t, eps = fixed_draws(ids.to(x.device), k, tuple(x.shape[1:]), seed, t_mode, noise)
    xs = x.repeat_interleave(k, dim=0)
    ys = y.repeat_interleave(k, dim=0) if y is not None else None
    ts, ns = t.reshape(b * k, 1), eps.reshape(b * k, 1, *x.shape[1:])
    sq = torch.zeros(b * k, dtype=torch.float64, device=x.device)
    with eval_mode(model) as inner:
        for rows, grads in chunked_grads(inner, loss_fn, xs, ys, ts, ns, chunk, only):
            for g in grads.values():
                sq[rows] += g.reshape(g.shape[0], -1).double().pow(2).sum(dim=1)
    return sq.sqrt().reshape(b, k)


def gradient_sum(
    model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor | None, ids: Tensor, k: int,
    seed: int, chunk: int = 64, t_mode: str = "shared_grid", noise: str = "per_sample",
) -> Tensor:
    """MoSo pass 1: sum over the batch of per-sample gradients g_z.

    Sum (not mean) so DDP ranks can all-reduce and divide by the global N. The sum
    of the per-sample gradients is the gradient of the summed losses, so this is one
    ordinary backward per chunk of ``chunk`` samples (K draws each), not a
    per-sample (vmap) pass.

    Returns:
        (P,) float64 on x.device, flattened in `named_parameters` order of the
        trainable parameters (the order `moso_terms` expects for g_mean).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    t, eps = fixed_draws(ids.to(x.device), k, tuple(x.shape[1:]), seed, t_mode, noise)
    with eval_mode(model) as inner:
        params = [p for p in inner.parameters() if p.requires_grad]
        total = [torch.zeros(p.shape, dtype=torch.float64, device=p.device) for p in params]
        for s in range(0, x.shape[0], chunk):
            rows = slice(s, min(s + chunk, x.shape[0]))
            xs = x[rows].repeat_interleave(k, dim=0)
            ys = y[rows].repeat_interleave(k, dim=0) if y is not None else None
            loss = loss_fn(inner, xs, ys, t[rows].reshape(-1),
                           eps[rows].reshape(-1, *x.shape[1:])).sum() / k
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for acc, g in zip(total, grads):
                if g is not None:
                    acc += g.double()
    return torch.cat([v.reshape(-1) for v in total])


def moso_terms(
    model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor | None, ids: Tensor, k: int,
    seed: int, g_mean: Tensor, chunk: int = 64, t_mode: str = "shared_grid",
    noise: str = "per_sample",
) -> tuple[Tensor, Tensor]:
    """MoSo pass 2: ||g_z||^2 and <g_mean, g_z> per sample, without storing g_z.

    Args:
        g_mean: (P,) mean gradient over the whole dataset (gradient_sum / N,
            all-reduced across ranks), same layout as `gradient_sum`.

    Returns:
        sq_norms: (B,) float64; dots: (B,) float64; on x.device.
    """
    t, eps = fixed_draws(ids.to(x.device), k, tuple(x.shape[1:]), seed, t_mode, noise)
    b = x.shape[0]
    sq = torch.zeros(b, dtype=torch.float64, device=x.device)
    dots = torch.zeros(b, dtype=torch.float64, device=x.device)
    with eval_mode(model) as inner:
        params, _ = split_tensors(inner)
        sizes = [p.numel() for p in params.values()]
        if sum(sizes) != g_mean.numel():
            raise ValueError(f"g_mean has {g_mean.numel()} entries, model has {sum(sizes)}")
        pieces = dict(zip(params, torch.split(g_mean.to(x.device, torch.float64), sizes)))
        for rows, grads in chunked_grads(inner, loss_fn, x, y, t, eps, chunk):
            for name, g in grads.items():
                flat = g.reshape(g.shape[0], -1).double()
                sq[rows] += flat.pow(2).sum(dim=1)
                dots[rows] += flat @ pieces[name]
    return sq, dots


def moso_scores(n: int, g_mean: Tensor, sq_norms: Tensor, dots: Tensor) -> np.ndarray:
    """MoSo score at one checkpoint (Tan et al. 2023, the released formula).

    score_z = (2N-3)/(N-1)^2 ||g||^2 - 1/(N-1)^2 ||g_z||^2
              + (2N-4)/(N-1)^2 <g - g_z / N, g_z>

    with g the dataset-mean gradient and g_z the sample's gradient; this is the
    expression in hrtan/MoSo's scoring code (and the diffusion paper's
    scoring_moso.py), computed here from <g, g_z> and ||g_z||^2.

    Args:
        n: dataset size N (global, not the shard's), >= 2.
        g_mean: (P,) mean gradient.
        sq_norms: (B,) ||g_z||^2; dots: (B,) <g, g_z>.

    Returns:
        (B,) float64 numpy array.
    """
    if n < 2:
        raise ValueError(f"MoSo needs N >= 2, got {n}")
    a = float(g_mean.double().pow(2).sum())
    b = sq_norms.detach().double().cpu().numpy()
    c = dots.detach().double().cpu().numpy()
    d = float(n - 1) ** 2
    return (2 * n - 3) / d * a - b / d + (2 * n - 4) / d * (c - b / n)
