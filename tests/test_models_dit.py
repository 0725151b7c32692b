"""DiT presets, parameter counts, vmap-compatibility, CFG and label dropout."""
from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad, vmap

from models import MODELS, build_dit
from models.dit import sincos_pos_embed_2d
from models.transport import cfg_velocity_fn, per_sample_flow_loss


# Tiny models run fastest on one thread; the shared 2-core machine thrashes on 2.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZES = {"XL": (28, 1152), "L": (24, 1024), "B": (12, 768), "S": (12, 384)}


def analytic_dit_params(depth: int, d: int, p: int, c_in: int, c_out: int, classes: int) -> int:
    """Parameter count from the DiT architecture, written out independently."""
    patch = c_in * p * p * d + d
    t_mlp = (256 * d + d) + (d * d + d)
    y_tab = (classes + 1) * d if classes else 0
    block = (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d) \
        + (6 * d * d + 6 * d)
    final = (d * p * p * c_out + p * p * c_out) + (2 * d * d + 2 * d)
    return patch + t_mlp + y_tab + depth * block + final


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_preset_builds_with_analytic_param_count(name: str) -> None:
    with torch.device("meta"):  # XL is 675M parameters: no memory, no init time
        model = build_dit(name, input_size=32, in_channels=4, num_classes=1000)
    depth, hidden = len(model.blocks), model.blocks[0].attn.qkv.in_features
    if name in ("DiT-Tiny/2", "DiT-Micro/2"):
        assert hidden <= 128 and depth <= 4
    else:
        size, patch = name[4:].split("/")
        assert (depth, hidden) == SIZES[size] and model.patch_size == int(patch)
    got = sum(p.numel() for p in model.parameters())
    assert got == analytic_dit_params(depth, hidden, model.patch_size, 4, 4, 1000)


def test_dit_xl2_matches_published_675m() -> None:
    # Published DiT-XL/2 (learn_sigma=True, 1000 classes + null, 32x32x4 input):
    # 675,129,632 parameters including its frozen 256x1152 pos_embed parameter, which
    # is a buffer here, so we compare against 675,129,632 - 294,912.
    with torch.device("meta"):
        model = build_dit("DiT-XL/2", 32, 4, num_classes=1000, learn_sigma=True)
    got = sum(p.numel() for p in model.parameters())
    published = 675_129_632 - 256 * 1152
    assert abs(got - published) / published < 0.01
    assert got == published  # exact architecture match, not just within 1%


def test_unknown_preset_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="DiT-Micro/2"):
        build_dit("DiT-Huge/3", 8, 4)


def test_pos_embed_matches_closed_form() -> None:
    emb = sincos_pos_embed_2d(8, 3)  # (9, 8): [sin x, cos x, sin y, cos y] per 2 freqs
    row, col = 2, 1
    freqs = torch.tensor([1.0, 1.0 / 100.0])
    want = torch.cat([torch.sin(col * freqs), torch.cos(col * freqs),
                      torch.sin(row * freqs), torch.cos(row * freqs)])
    torch.testing.assert_close(emb[row * 3 + col], want)


def _micro(num_classes: int = 10, seed: int = 0) -> torch.nn.Module:
    model = build_dit("DiT-Micro/2", 8, 4, num_classes=num_classes)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # leave adaLN-Zero's zero init so outputs depend on inputs
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def _batch(b: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 4, 8, 8, generator=g), torch.rand(b, generator=g),
            torch.randint(0, 10, (b,), generator=g), torch.randn(b, 4, 8, 8, generator=g))


def test_output_shape_and_unconditional() -> None:
    x, t, y, _ = _batch()
    assert _micro()(x, t, y).shape == (6, 4, 8, 8)
    unc = _micro(num_classes=0)
    assert unc.y_embed is None and unc(x, t, None).shape == (6, 4, 8, 8)
    with pytest.raises(ValueError):
        _micro()(x, t, None)


def test_vmap_grad_matches_per_sample_loop() -> None:
    model = _micro().eval()
    x, t, y, noise = _batch()
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss_one(p, xi, yi, ti, ni):
        out = per_sample_flow_loss(
            lambda *a: functional_call(model, p, a), xi[None], yi[None], ti[None], ni[None])
        return out[0]

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0, 0, 0))(params, x, y, t, noise)
    for i in range(x.shape[0]):
        model.zero_grad()
        per_sample_flow_loss(model, x[i:i + 1], y[i:i + 1], t[i:i + 1], noise[i:i + 1]).sum().backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(per_sample[name][i], p.grad, atol=1e-6, rtol=1e-4)


def test_label_dropout_only_in_training_and_seeded() -> None:
    model = _micro()
    x, t, y, _ = _batch(b=64)
    model.eval()
    torch.testing.assert_close(model(x, t, y), model(x, t, y))
    model.train()
    model.class_dropout_prob = 0.5
    model.label_generator = torch.Generator().manual_seed(3)
    a = model(x, t, y)
    model.label_generator = torch.Generator().manual_seed(3)
    torch.testing.assert_close(model(x, t, y), a)
    cond = model(x, t, y, drop_mask=torch.zeros(64, dtype=torch.bool))
    null = model(x, t, y, drop_mask=torch.ones(64, dtype=torch.bool))
    dropped = (a - null).flatten(1).abs().amax(1) < 1e-6
    kept = (a - cond).flatten(1).abs().amax(1) < 1e-6
    assert torch.all(dropped ^ kept) and 10 < int(dropped.sum()) < 54


def test_cfg_scale_one_equals_conditional() -> None:
    model = _micro().eval()
    x, t, y, _ = _batch()
    cond = model(x, t, y)
    torch.testing.assert_close(model.forward_with_cfg(x, t, y, 1.0), cond, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(cfg_velocity_fn(model, y, 1.0)(x, t), cond)
    null = model(x, t, torch.full_like(y, 10))
    want = null + 3.0 * (cond - null)  # guidance formula, computed independently
    torch.testing.assert_close(cfg_velocity_fn(model, y, 3.0)(x, t), want, atol=1e-5, rtol=1e-5)


def test_sdpa_equals_naive_attention() -> None:
    model = _micro().eval()
    x, t, y, _ = _batch()
    fast = model(x, t, y)
    for blk in model.blocks:
        blk.attn.naive = True
    torch.testing.assert_close(model(x, t, y), fast, atol=1e-5, rtol=1e-5)


def test_init_is_seeded_not_global() -> None:
    torch.manual_seed(123)  # the global RNG must not influence the weights
    a = build_dit("DiT-Micro/2", 8, 4, num_classes=10)
    torch.manual_seed(456)
    b = build_dit("DiT-Micro/2", 8, 4, num_classes=10)
    c = build_dit("DiT-Micro/2", 8, 4, num_classes=10, seed=1)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
