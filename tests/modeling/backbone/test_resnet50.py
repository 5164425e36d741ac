"""detectron2's ResNet-50 (build_resnet_backbone): shapes, and torchvision weights via the converter CLI."""
import copy
import importlib.util
import os

import pytest
import torch
import torchvision
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone
from torch import nn

import aqformer_d2
from aqformer_d2.checkpoint import (
    AQCheckpointer,
    StateDictLoadError,
    convert_torchvision_resnet_state_dict,
    load_state_dict_with_report,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Model(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone


@pytest.fixture(scope="module")
def r50_model():
    cfg = get_cfg()
    aqformer_d2.add_aqformer_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False  # torchvision's ResNet-50 v1.5
    return _Model(build_backbone(cfg).eval())


@pytest.fixture(scope="module")
def tv_r50_file(tmp_path_factory):
    torch.manual_seed(0)
    tv = torchvision.models.resnet50(weights=None).eval()
    gen = torch.Generator().manual_seed(1)
    for module in tv.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(module.weight.shape, generator=gen) * 0.5 + 0.2)
    path = tmp_path_factory.mktemp("tv") / "resnet50.pth"
    torch.save(tv.state_dict(), path)
    return tv, str(path)


def test_r50_shapes_at_224(r50_model):
    backbone = r50_model.backbone
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 224, 224))
    expected = {"res2": (256, 4), "res3": (512, 8), "res4": (1024, 16), "res5": (2048, 32)}
    assert list(out) == list(expected)
    shapes = backbone.output_shape()
    for name, (channels, stride) in expected.items():
        assert out[name].shape == (1, channels, 224 // stride, 224 // stride)
        assert shapes[name].channels == channels == out[name].shape[1]
        assert shapes[name].stride == stride


def _converted_checkpoint(tmp_path, tv_file):
    out = str(tmp_path / "R-50-tv.pth")
    _load_tool("convert_torchvision_resnet").main([tv_file, out])
    return out


def _assert_matches_torchvision(r50_model, tv):
    res = r50_model.backbone
    assert torch.equal(res.stem.conv1.weight, tv.conv1.weight)
    assert torch.equal(res.stem.conv1.norm.running_var, tv.bn1.running_var)
    assert torch.equal(res.res2[0].shortcut.weight, tv.layer1[0].downsample[0].weight)
    assert torch.equal(res.res3[3].conv3.norm.weight, tv.layer2[3].bn3.weight)
    assert torch.equal(res.res5[2].conv2.norm.running_mean, tv.layer4[2].bn2.running_mean)
    assert torch.equal(res.res5[0].shortcut.norm.bias, tv.layer4[0].downsample[1].bias)
    # Features compared in float64 (on copies): the two networks may evaluate their convolutions (up to
    # 3 x 3 x 512 = 4608 terms per output) and inference BatchNorms (FrozenBatchNorm2d vs BatchNorm2d)
    # in different orders. Two orders of an n-term sum differ by at most 2(n-1)u * sum|terms| (Higham,
    # Accuracy and Stability of Numerical Algorithms, section 4.2): 1e-12 * sum|terms| per layer with
    # u = 2**-53, 8 orders below the 1e-4 asserted after the whole network, on any CPU and thread count.
    # In float32 (u = 6e-8) that per-layer bound is already 5.5e-4 * sum|terms|.
    res64, tv64 = copy.deepcopy(res).double(), copy.deepcopy(tv).double()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        expected = tv64.layer4(tv64.layer3(tv64.layer2(tv64.layer1(tv64.maxpool(tv64.relu(tv64.bn1(tv64.conv1(x))))))))
        torch.testing.assert_close(res64(x)["res5"], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("checkpointer_cls", [DetectionCheckpointer, AQCheckpointer])
def test_torchvision_r50_through_converter(tmp_path, r50_model, tv_r50_file, checkpointer_cls):
    tv, tv_file = tv_r50_file
    converted = _converted_checkpoint(tmp_path, tv_file)
    saved = torch.load(converted, weights_only=True)
    assert saved["__author__"] == "torchvision" and saved["matching_heuristics"] is False
    assert all(k.startswith("backbone.") for k in saved["model"]) and "backbone.stem.conv1.weight" in saved["model"]
    for param in r50_model.parameters():  # make sure the values come from the file
        param.data.zero_()
    checkpointer_cls(r50_model).load(converted)
    _assert_matches_torchvision(r50_model, tv)


def test_missing_r50_key_raises_in_strict_loading(r50_model, tv_r50_file):
    tv, tv_file = tv_r50_file
    state = dict(tv.state_dict())
    del state["layer3.4.bn2.running_mean"]
    converted, dropped = convert_torchvision_resnet_state_dict(state, source=tv_file)
    assert "fc.weight" in dropped
    with pytest.raises(StateDictLoadError) as info:
        load_state_dict_with_report(r50_model.backbone, converted, source=tv_file, strict=True)
    assert info.value.report.missing == ("res4.4.conv2.norm.running_mean",)
    assert tv_file in str(info.value) and "res4.4.conv2.norm.running_mean" in str(info.value)
