"""The FID Inception-v3 used by clean-fid, as a PyTorch module (architecture only).

clean-fid's "clean" mode runs the TorchScript file ``inception-2015-12-05.pt``
(a port of the TF FID graph). For building without weights, or loading the
equivalent pytorch-fid state dict (``pt_inception-2015-12-05-6726825d.pth``), this
module rebuilds the same network from torchvision blocks with the FID-specific
pooling changes (as pytorch-fid and clean-fid's ``inception_pytorch`` do).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from cleanfid.inception_pytorch import (FIDInceptionA, FIDInceptionC, FIDInceptionE_1,
                                        FIDInceptionE_2)


def fid_inception_v3_untrained() -> nn.Module:
    """torchvision Inception-v3 patched to the FID variant (1008 classes), no weights."""
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
