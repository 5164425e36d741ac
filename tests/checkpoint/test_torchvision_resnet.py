"""torchvision ResNet -> detectron2 ResNet key conversion (ResNet-18 here; ResNet-50 in tests/modeling/backbone)."""
import copy

import pytest
import torch
import torchvision
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.resnet import build_resnet_backbone

import aqformer_d2
from aqformer_d2.checkpoint import (
    StateDictLoadError,
    convert_torchvision_resnet_state_dict,
    load_torchvision_resnet,
)


def _randomize_bn_stats(model: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(module.weight.shape, generator=gen) + 0.5)
            module.bias.data.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)


@pytest.fixture(scope="module")
def tv_resnet18():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    _randomize_bn_stats(model)
    return model


def _d2_resnet18():
    cfg = get_cfg()
    aqformer_d2.add_aqformer_config(cfg)
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    return build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()


def test_key_mapping():
    state = {
        "conv1.weight": torch.zeros(1),
        "bn1.running_var": torch.zeros(1),
        "bn1.num_batches_tracked": torch.zeros(()),
        "layer1.0.conv2.weight": torch.zeros(1),
        "layer3.5.bn3.bias": torch.zeros(1),
        "layer2.0.downsample.0.weight": torch.zeros(1),
        "layer4.0.downsample.1.running_mean": torch.zeros(1),
        "fc.weight": torch.zeros(1),
        "fc.bias": torch.zeros(1),
    }
    converted, dropped = convert_torchvision_resnet_state_dict(state)
    assert sorted(converted) == sorted([
        "stem.conv1.weight",
        "stem.conv1.norm.running_var",
        "res2.0.conv2.weight",
        "res4.5.conv3.norm.bias",
        "res3.0.shortcut.weight",
        "res5.0.shortcut.norm.running_mean",
    ])
    assert sorted(dropped) == ["bn1.num_batches_tracked", "fc.bias", "fc.weight"]


def test_unknown_keys_are_an_error():
    with pytest.raises(ValueError, match="my.pth.*layer5.0.conv1.weight"):
        convert_torchvision_resnet_state_dict(
            {"conv1.weight": torch.zeros(1), "layer5.0.conv1.weight": torch.zeros(1)}, source="my.pth"
        )
    with pytest.raises(ValueError, match="not a torchvision ResNet"):
        convert_torchvision_resnet_state_dict({"stem.conv1.weight": torch.zeros(1)})


def test_converted_weights_reproduce_torchvision_features(tmp_path, tv_resnet18):
    path = tmp_path / "resnet18.pth"
    torch.save(tv_resnet18.state_dict(), path)
    d2 = _d2_resnet18()
    report = load_torchvision_resnet(d2, str(path))
    assert not report.missing and not report.mismatched and not report.unexpected
    assert torch.equal(d2.res4[1].conv2.norm.running_var, tv_resnet18.layer3[1].bn2.running_var)
    # Features compared in float64: the two networks may evaluate their convolutions (up to 3 x 3 x 512 =
    # 4608 terms per output) and their inference BatchNorms (FrozenBatchNorm2d vs BatchNorm2d) in
    # different orders. Two orders of an n-term sum differ by at most 2(n-1)u * sum|terms| (Higham,
    # Accuracy and Stability of Numerical Algorithms, section 4.2): 1e-12 * sum|terms| per layer with
    # u = 2**-53, 8 orders below the 1e-4 asserted after the whole network, on any CPU and thread count.
    # In float32 (u = 6e-8) that per-layer bound is already 5.5e-4 * sum|terms|.
    tv64, d2 = copy.deepcopy(tv_resnet18).double(), d2.double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        t = tv64.maxpool(tv64.relu(tv64.bn1(tv64.conv1(x))))
        tv_feats = {}
        for i, layer in enumerate([tv64.layer1, tv64.layer2, tv64.layer3, tv64.layer4]):
            t = layer(t)
            tv_feats[f"res{i + 2}"] = t
        d2_feats = d2(x)
    for name, expected in tv_feats.items():
        assert d2_feats[name].shape == expected.shape
        torch.testing.assert_close(d2_feats[name], expected, rtol=1e-4, atol=1e-4)


def test_missing_backbone_key_raises(tmp_path, tv_resnet18):
    state = dict(tv_resnet18.state_dict())
    del state["layer4.1.conv2.weight"]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(StateDictLoadError, match=r"broken.pth[\s\S]*res5.1.conv2.weight"):
        load_torchvision_resnet(_d2_resnet18(), str(path))
