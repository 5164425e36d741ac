"""A small residual ConvNet backbone for CPU work (tests, SynthAVS, the demo job).

It gives the same 4 scales as ResNet-50 (``res2``..``res5`` at strides 4/8/16/32) at a fraction of
the cost, and shows how a backbone is added through detectron2's BACKBONE_REGISTRY.
"""
from typing import Dict, List

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

__all__ = ["AQTinyConvNet", "build_aq_tiny_convnet"]


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection: [N, C, H, W] -> [N, C, H, W]."""

    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.conv1 = Conv2d(channels, channels, 3, padding=1, bias=not norm, norm=get_norm(norm, channels))
        self.conv2 = Conv2d(channels, channels, 3, padding=1, bias=not norm, norm=get_norm(norm, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class AQTinyConvNet(Backbone):
    """Stem (stride 2) then 4 stages, each a stride-2 3x3 convolution followed by ``blocks`` basic blocks.

    Args:
        in_channels: input channels (3).
        stem_channels: width of the stem.
        channels: widths of the 4 stages (strides 4, 8, 16, 32).
        blocks: residual blocks per stage.
        norm: detectron2 norm name ("BN", "GN", "" ...).
        out_features: which of "res2".."res5" to return.
    """

    def __init__(self, *, in_channels: int = 3, stem_channels: int = 16, channels: List[int] = (24, 48, 96, 160),
                 blocks: int = 1, norm: str = "BN", out_features: List[str] = ("res2", "res3", "res4", "res5")):
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f"AQTinyConvNet: channels must list 4 stage widths, got {list(channels)}")
        names = ["res2", "res3", "res4", "res5"]
        unknown = [f for f in out_features if f not in names]
        if unknown:
            raise ValueError(f"AQTinyConvNet: unknown out_features {unknown}; choose from {names}")
        self.stem = Conv2d(in_channels, stem_channels, 3, stride=2, padding=1, bias=not norm,
                           norm=get_norm(norm, stem_channels), activation=F.relu)
        self.stages = nn.ModuleList()
        prev = stem_channels
        for width in channels:
            down = Conv2d(prev, width, 3, stride=2, padding=1, bias=not norm, norm=get_norm(norm, width),
                          activation=F.relu)
            self.stages.append(nn.Sequential(down, *[_BasicBlock(width, norm) for _ in range(blocks)]))
            prev = width
        self._names = names
        self._out_features = list(out_features)
        self._out_feature_channels = dict(zip(names, channels))
        self._out_feature_strides = {n: 2 ** (i + 2) for i, n in enumerate(names)}

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """x: [N, 3, H, W] -> {"res2": [N, C2, H/4, W/4], ..., "res5": [N, C5, H/32, W/32]}."""
        outputs = {}
        x = self.stem(x)  # [N, stem, H/2, W/2]
        for name, stage in zip(self._names, self.stages):
            x = stage(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
            for n in self._out_features
        }

    @property
    def size_divisibility(self) -> int:
        return 32


@BACKBONE_REGISTRY.register()
def build_aq_tiny_convnet(cfg, input_shape: ShapeSpec) -> AQTinyConvNet:
    """Builds :class:`AQTinyConvNet` from ``cfg.MODEL.TINY_CONVNET``."""
    c = cfg.MODEL.TINY_CONVNET
    return AQTinyConvNet(in_channels=input_shape.channels, stem_channels=c.STEM_CHANNELS, channels=c.CHANNELS,
                         blocks=c.BLOCKS, norm=c.NORM, out_features=c.OUT_FEATURES)
