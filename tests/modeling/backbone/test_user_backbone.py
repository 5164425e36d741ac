"""A user's own Backbone registered in detectron2's BACKBONE_REGISTRY and built through build_backbone(cfg)."""
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, build_backbone
from torch import nn

import aqformer_d2

USER_BACKBONE_NAME = "AQTestUserTinyBackbone"


class _UserTinyBackbone(Backbone):
    """Four strided convolutions: res2..res5 at strides 4/8/16/32 with 8/16/24/32 channels."""

    def __init__(self, in_channels: int):
        super().__init__()
        widths = [8, 16, 24, 32]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, stride=4, padding=1)
        self.stages = nn.ModuleList(
            [nn.Conv2d(widths[i - 1], widths[i], 3, stride=2, padding=1) for i in range(1, 4)]
        )
        self._out_features = ["res2", "res3", "res4", "res5"]
        self._out_feature_channels = dict(zip(self._out_features, widths))
        self._out_feature_strides = dict(zip(self._out_features, [4, 8, 16, 32]))

    def forward(self, x):
        x = self.stem(x)  # [N, 8, H/4, W/4]
        out = {"res2": x}
        for name, stage in zip(self._out_features[1:], self.stages):
            x = stage(x)
            out[name] = x
        return out


def _builder(cfg, input_shape: ShapeSpec):
    return _UserTinyBackbone(input_shape.channels)


_builder.__name__ = USER_BACKBONE_NAME
if USER_BACKBONE_NAME not in BACKBONE_REGISTRY:
    BACKBONE_REGISTRY.register(_builder)


def test_user_backbone_builds_from_cfg():
    cfg = get_cfg()
    aqformer_d2.add_aqformer_config(cfg)
    cfg.MODEL.BACKBONE.NAME = USER_BACKBONE_NAME
    backbone = build_backbone(cfg)
    assert isinstance(backbone, _UserTinyBackbone)
    shapes = backbone.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {
        "res2": (8, 4), "res3": (16, 8), "res4": (24, 16), "res5": (32, 32)
    }
    # the names match what the pixel decoder reads by default
    assert list(shapes) == list(cfg.MODEL.AQ_PIXEL_DECODER.IN_FEATURES)
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, 64, 96))
    for name, spec in shapes.items():
        assert out[name].shape == (2, spec.channels, 64 // spec.stride, 96 // spec.stride)
