"""Flow matching: exact Gaussian velocity field, sampler accuracy/order, losses, EMA."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models import EMA, build_dit, per_sample_flow_loss, sample_ode, training_loss
from models.transport import interpolate


# Tiny models run fastest on one thread; the shared 2-core machine thrashes on 2.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

MU = torch.tensor([1.5, -0.5, 0.25], dtype=torch.float64)
_A = torch.tensor([[1.0, 0.3, 0.0], [0.0, 0.6, -0.2], [0.4, 0.0, 0.8]], dtype=torch.float64)
SIGMA = _A @ _A.T + 0.05 * torch.eye(3, dtype=torch.float64)


def gaussian_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[x1 - x0 | x_t = x] for x0 ~ N(0, I), x1 ~ N(MU, SIGMA), x_t = t x1 + (1-t) x0.

    x_t ~ N(t MU, S_t), S_t = t^2 SIGMA + (1-t)^2 I and Cov(x1 - x0, x_t) = t SIGMA - (1-t) I,
    so the Gaussian conditional mean is MU + (t SIGMA - (1-t) I) S_t^{-1} (x - t MU).
    """
    eye = torch.eye(3, dtype=x.dtype)
    out = torch.empty_like(x)
    for tv in torch.unique(t):
        s_t = tv**2 * SIGMA + (1 - tv) ** 2 * eye
        gain = (tv * SIGMA - (1 - tv) * eye) @ torch.linalg.inv(s_t)
        rows = t == tv
        out[rows] = MU + (x[rows] - tv * MU) @ gain.T
    return out


def exact_endpoint(x0: torch.Tensor) -> torch.Tensor:
    """The ODE flow is x_t = t MU + S_t^{1/2} x0, so x_1 = MU + SIGMA^{1/2} x0."""
    lam, u = torch.linalg.eigh(SIGMA)
    return MU + x0 @ (u @ torch.diag(lam.sqrt()) @ u.T).T


def test_gaussian_velocity_formula_matches_monte_carlo_regression() -> None:
    # Independent check of the derivation: regress (x1 - x0) on x_t by least squares.
    gen = torch.Generator().manual_seed(0)
    n, t = 200_000, 0.35
    x0 = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    x1 = MU + torch.randn(n, 3, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(SIGMA).T
    xt = t * x1 + (1 - t) * x0
    design = torch.cat([xt, torch.ones(n, 1, dtype=torch.float64)], dim=1)
    coef = torch.linalg.lstsq(design, x1 - x0).solution
    probe = torch.tensor([[0.2, 0.1, -0.3], [1.0, -1.0, 0.5]], dtype=torch.float64)
    pred = torch.cat([probe, torch.ones(2, 1, dtype=torch.float64)], 1) @ coef
    torch.testing.assert_close(gaussian_velocity(probe, torch.full((2,), t, dtype=torch.float64)),
                               pred, atol=0.02, rtol=0)


@pytest.mark.parametrize("method,steps", [("euler", 200), ("heun", 20)])
def test_samplers_map_noise_to_target_moments(method: str, steps: int) -> None:
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(20_000, 3, generator=gen, dtype=torch.float64)
    x1 = sample_ode(gaussian_velocity, x0, steps, method)
    # Sampling error of the moments at n = 20000 is about 0.01-0.02.
    torch.testing.assert_close(x1.mean(0), MU, atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(x1.T), SIGMA, atol=0.06, rtol=0)


def test_heun_converges_faster_than_euler() -> None:
    gen = torch.Generator().manual_seed(2)
    x0 = torch.randn(256, 3, generator=gen, dtype=torch.float64)
    target = exact_endpoint(x0)
    steps = [4, 8, 16, 32]
    slopes = {}
    for method in ("euler", "heun"):
        errs = [(sample_ode(gaussian_velocity, x0, n, method) - target).norm(dim=1).mean().item()
                for n in steps]
        assert all(a > b for a, b in zip(errs, errs[1:]))
        slopes[method] = np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert slopes["euler"] == pytest.approx(-1.0, abs=0.25)  # first order
    assert slopes["heun"] == pytest.approx(-2.0, abs=0.35)   # second order


def test_sampler_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        sample_ode(gaussian_velocity, torch.zeros(1, 3), 4, "rk4")
    with pytest.raises(ValueError):
        sample_ode(gaussian_velocity, torch.zeros(1, 3), 0, "euler")


def test_path_convention_t0_noise_t1_data() -> None:
    x1, noise = torch.ones(2, 4, 2, 2), torch.zeros(2, 4, 2, 2)
    xt, v = interpolate(x1, noise, torch.tensor([0.0, 1.0]))
    assert torch.all(xt[0] == 0) and torch.all(xt[1] == 1) and torch.all(v == 1)


def _latents(n: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_per_sample_loss_is_repeatable_and_averages_to_mean() -> None:
    model = build_dit("DiT-Micro/2", 8, 4, num_classes=10).eval()
    x1, y = _latents()
    g = torch.Generator().manual_seed(5)
    t, noise = torch.rand(16, generator=g), torch.randn(16, 4, 8, 8, generator=g)
    a = per_sample_flow_loss(model, x1, y, t, noise)
    torch.testing.assert_close(per_sample_flow_loss(model, x1, y, t, noise), a, rtol=0, atol=0)
    # Independent mean: plain MSE of the whole batch against the velocity target.
    xt = t.view(-1, 1, 1, 1) * x1 + (1 - t.view(-1, 1, 1, 1)) * noise
    mean = torch.nn.functional.mse_loss(model(xt, t, y), x1 - noise)
    torch.testing.assert_close(a.mean(), mean)
    l1 = training_loss(model, x1, y, torch.Generator().manual_seed(9))
    l2 = training_loss(model, x1, y, torch.Generator().manual_seed(9))
    assert l1.shape == (16,) and torch.equal(l1, l2)


def test_tiny_dit_overfits_16_latents() -> None:
    # Overfit-one-batch check: fixed (t, noise) draws make the regression target fixed,
    # so a working model + loss + optimizer must drive the loss far down.
    model = build_dit("DiT-Micro/2", 8, 4, num_classes=10, class_dropout_prob=0.0)
    x1, y = _latents()
    g = torch.Generator().manual_seed(0)
    t_fix, n_fix = torch.rand(16, generator=g), torch.randn(16, 4, 8, 8, generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    ema = EMA(model, decay=0.9)
    before = per_sample_flow_loss(model, x1, y, t_fix, n_fix).mean().item()
    for _ in range(150):
        loss = per_sample_flow_loss(model, x1, y, t_fix, n_fix).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(model)
    with torch.no_grad():
        after = per_sample_flow_loss(model, x1, y, t_fix, n_fix).mean().item()
    assert after < before / 10, (before, after)
    assert ema.num_updates == 150


def test_ema_average_and_state_roundtrip() -> None:
    lin = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(0.0)
    ema = EMA(lin, decay=0.5)
    with torch.no_grad():
        lin.weight.fill_(4.0)
    ema.update(lin)
    ema.update(lin)
    # 0 -> 0.5*0 + 0.5*4 = 2 -> 0.5*2 + 0.5*4 = 3
    torch.testing.assert_close(ema.module.weight, torch.full((1, 2), 3.0))
    other = EMA(torch.nn.Linear(2, 1, bias=False), decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.decay == 0.5 and other.num_updates == 2
    torch.testing.assert_close(other.module.weight, ema.module.weight)
    with pytest.raises(ValueError):
        EMA(lin, decay=1.0)
