"""The whole AQFormer model running on a backbone the user registers themselves (what the README shows).

A user backbone only has to be a detectron2 ``Backbone`` registered in ``BACKBONE_REGISTRY`` whose
``output_shape()`` names the 4 scales listed in ``MODEL.AQ_PIXEL_DECODER.IN_FEATURES`` (res2..res5 at
strides 4, 8, 16, 32). Its widths are read from ``output_shape()``; nothing else is configured.
"""
import torch
from detectron2.config import CfgNode as CN
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, build_model
from torch import nn
from torch.nn import functional as F

from aqformer_d2.modeling import AQFormer

from .meta_arch.helpers import TINY_CONFIG, check_gradients, gradient_exceptions, make_cfg, make_clip

USER_BACKBONE_NAME = "AQTestUserBackboneForWholeModel"
T, H, W = 5, 64, 96


class UserConvBackbone(Backbone):
    """A stride-4 stem then three stride-2 convolutions: res2..res5 at strides 4/8/16/32."""

    def __init__(self, in_channels: int, widths):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(widths[0], widths[0], 3, stride=2, padding=1), nn.ReLU(),
        )
        self.stages = nn.ModuleList(
            nn.Conv2d(widths[i - 1], widths[i], 3, stride=2, padding=1) for i in range(1, 4)
        )
        self._out_features = ["res2", "res3", "res4", "res5"]
        self._out_feature_channels = dict(zip(self._out_features, widths))
        self._out_feature_strides = dict(zip(self._out_features, [4, 8, 16, 32]))

    def forward(self, x):
        x = self.stem(x)  # [N, w0, H/4, W/4]
        out = {"res2": x}
        for name, stage in zip(self._out_features[1:], self.stages):
            x = F.relu(stage(x))
            out[name] = x
        return out

    # output_shape() and size_divisibility come from detectron2's Backbone base class


def build_user_conv_backbone(cfg, input_shape: ShapeSpec):
    return UserConvBackbone(input_shape.channels, cfg.MODEL.USER_BACKBONE.WIDTHS)


build_user_conv_backbone.__name__ = USER_BACKBONE_NAME
if USER_BACKBONE_NAME not in BACKBONE_REGISTRY:
    BACKBONE_REGISTRY.register(build_user_conv_backbone)


def _cfg():
    cfg = make_cfg(TINY_CONFIG)
    cfg.MODEL.USER_BACKBONE = CN()
    cfg.MODEL.USER_BACKBONE.WIDTHS = [12, 20, 28, 36]
    cfg.MODEL.BACKBONE.NAME = USER_BACKBONE_NAME
    return cfg


def _clips(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [make_clip(g, T, H, W, valid=[True, True, False, True, True]), make_clip(g, T, H, W)]


def test_whole_model_trains_and_infers_with_a_user_backbone():
    cfg = _cfg()
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model, AQFormer)
    assert isinstance(model.backbone, UserConvBackbone)
    # the pixel decoder was sized from the user backbone's output_shape()
    assert model.pixel_decoder.in_channels == {"res2": 12, "res3": 20, "res4": 28, "res5": 36}
    assert model.pixel_decoder.lateral_conv.in_channels == 12

    # training: finite scalar losses, gradients reach the user backbone (and everything else that learns)
    model.train()
    losses = model(_clips())
    assert "loss_sim" in losses and "loss_bce" in losses
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    check_gradients(model, gradient_exceptions(model, cfg))
    for name, p in model.backbone.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name

    # inference: per-clip probabilities at the requested size
    model.eval()
    clips = _clips(1)
    clips[1]["height"], clips[1]["width"] = 120, 160
    with torch.no_grad():
        out = model(clips)
    assert [r["sound_probs"].shape for r in out] == [(T, H, W), (T, 120, 160)]
    assert all(0 <= r["sound_probs"].min() and r["sound_probs"].max() <= 1 for r in out)
