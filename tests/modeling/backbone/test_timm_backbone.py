"""AQTimmBackbone: shapes (pvt_v2_b5, pvt_v2_b0, resnet18), local weights, freezing, conversion tool."""
import importlib.util
import os

import pytest
import timm
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone
from safetensors.torch import save_file
from torch import nn

import aqformer_d2
import aqformer_d2.modeling.backbone  # noqa: F401  (registers AQTimmBackbone)
from aqformer_d2.checkpoint import (
    AQCheckpointer,
    StateDictLoadError,
    convert_timm_state_dict,
    create_timm_models,
    timm_feature_name_map,
)
from aqformer_d2.modeling.backbone import AQTimmBackbone

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
NAMES = ["res2", "res3", "res4", "res5"]


def _cfg(name, out_indices=(0, 1, 2, 3), weights="", freeze_at=0):
    cfg = get_cfg()
    aqformer_d2.add_aqformer_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "AQTimmBackbone"
    cfg.MODEL.TIMM_BACKBONE.NAME = name
    cfg.MODEL.TIMM_BACKBONE.OUT_INDICES = list(out_indices)
    cfg.MODEL.TIMM_BACKBONE.OUT_FEATURES = NAMES[: len(out_indices)]
    cfg.MODEL.TIMM_BACKBONE.WEIGHTS = weights
    cfg.MODEL.TIMM_BACKBONE.FREEZE_AT = freeze_at
    return cfg


def _check_shapes(backbone, channels, size=224):
    strides = [4, 8, 16, 32]
    assert backbone.size_divisibility == 32
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, size, size))
    assert list(out) == NAMES
    shapes = backbone.output_shape()
    assert list(shapes) == NAMES
    for name, c, s in zip(NAMES, channels, strides):
        assert out[name].shape == (1, c, size // s, size // s), name
        assert shapes[name].channels == c and shapes[name].stride == s


def test_registered():
    assert BACKBONE_REGISTRY.get("AQTimmBackbone") is AQTimmBackbone


def test_pvt_v2_b5_paper_backbone():
    backbone = build_backbone(_cfg("pvt_v2_b5"))  # the config defaults (NAME pvt_v2_b5, OUT_INDICES 0..3)
    assert isinstance(backbone, AQTimmBackbone)
    assert 80e6 < sum(p.numel() for p in backbone.parameters()) < 83e6
    _check_shapes(backbone, [64, 128, 320, 512])
    # every plain linear layer of timm's model runs through aqformer_d2's Linear (oneDNN on the CPU)
    from aqformer_d2.modeling.layers import Linear

    assert backbone.fast_linear_layers == sum(isinstance(m, Linear) for m in backbone.modules()) > 100
    assert not any(type(m) is torch.nn.Linear for m in backbone.modules())


@pytest.mark.parametrize(
    "name, out_indices, channels",
    [("pvt_v2_b0", (0, 1, 2, 3), [32, 64, 160, 256]), ("resnet18", (1, 2, 3, 4), [64, 128, 256, 512])],
)
def test_tiny_backbones(name, out_indices, channels):
    _check_shapes(build_backbone(_cfg(name, out_indices)), channels, size=224)


def test_pvt_v2_b5_classification_keys_map_except_head():
    # meta device: no memory, checks every timm key of the paper backbone has its place
    features, classification = create_timm_models("pvt_v2_b5")
    name_map = timm_feature_name_map(features, classification)
    renamed, leftover = convert_timm_state_dict(classification.state_dict(), name_map, features.state_dict().keys())
    assert sorted(leftover) == ["head.bias", "head.weight"]
    assert set(renamed) == set(features.state_dict())
    assert name_map.to_features("stages.3.blocks.2.attn.q.weight") == "stages_3.blocks.2.attn.q.weight"


def _classification_state(name, seed):
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False)
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen))
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_body_matches(backbone, classification_state, mapping):
    body_state = backbone.body.state_dict()
    for class_key, feat_key in mapping.items():
        assert torch.equal(body_state[feat_key], classification_state[class_key]), feat_key


def test_pvt_v2_b0_weights_from_pth_with_head(tmp_path):
    state = _classification_state("pvt_v2_b0", seed=1)
    assert "head.weight" in state
    path = tmp_path / "pvt_v2_b0.pth"
    torch.save(state, path)
    backbone = build_backbone(_cfg("pvt_v2_b0", weights=str(path)))
    report = backbone.load_report
    assert sorted(report.unexpected) == ["head.bias", "head.weight"]
    assert not report.missing and not report.mismatched and not report.has_errors
    mapping = {k: "stages_" + k[len("stages."):] if k.startswith("stages.") else k
               for k in state if not k.startswith("head.")}
    assert "stages_2.blocks.1.mlp.fc1.weight" in mapping.values()
    _assert_body_matches(backbone, state, mapping)


def test_resnet18_weights_from_safetensors_in_checkpoint_dict(tmp_path):
    state = _classification_state("resnet18", seed=2)
    path = tmp_path / "resnet18.safetensors"
    save_file(state, str(path))
    backbone = build_backbone(_cfg("resnet18", (1, 2, 3, 4), weights=str(path)))
    assert sorted(backbone.load_report.unexpected) == ["fc.bias", "fc.weight"]
    _assert_body_matches(backbone, state, {k: k for k in state if not k.startswith("fc.")})
    # a timm training checkpoint nests the weights under "state_dict"
    nested = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": state, "epoch": 3, "arch": "resnet18"}, nested)
    again = build_backbone(_cfg("resnet18", (1, 2, 3, 4), weights=str(nested)))
    _assert_body_matches(again, state, {k: k for k in state if not k.startswith("fc.")})


def test_missing_backbone_key_is_a_clear_error(tmp_path):
    state = _classification_state("pvt_v2_b0", seed=3)
    del state["stages.1.blocks.0.attn.kv.weight"]
    path = tmp_path / "incomplete.pth"
    torch.save(state, path)
    with pytest.raises(StateDictLoadError) as info:
        build_backbone(_cfg("pvt_v2_b0", weights=str(path)))
    message = str(info.value)
    assert "incomplete.pth" in message and "pvt_v2_b0" in message
    assert "stages_1.blocks.0.attn.kv.weight" in message
    assert info.value.report.missing == ("stages_1.blocks.0.attn.kv.weight",)


def test_wrong_architecture_checkpoint_is_rejected(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(_classification_state("resnet18", seed=4), path)
    with pytest.raises(StateDictLoadError, match="missing in checkpoint"):
        build_backbone(_cfg("pvt_v2_b0", weights=str(path)))


def test_freeze_at_resnet18():
    backbone = build_backbone(_cfg("resnet18", (1, 2, 3, 4), freeze_at=2))  # stem + layer1, as detectron2's FREEZE_AT
    body = backbone.body
    frozen = {n for n, p in body.named_parameters() if not p.requires_grad}
    assert "conv1.weight" in frozen and "layer1.1.conv2.weight" in frozen
    assert not any(n.startswith(("layer2", "layer3", "layer4")) for n in frozen)
    assert all(p.requires_grad for p in body.layer2.parameters())
    assert isinstance(body.bn1, FrozenBatchNorm2d) and isinstance(body.layer1[0].bn2, FrozenBatchNorm2d)
    assert isinstance(body.layer2[0].bn1, nn.BatchNorm2d)
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, 64, 64))["res2"].shape == (1, 64, 16, 16)


def test_freeze_at_pvt_keeps_loaded_weights(tmp_path):
    state = _classification_state("pvt_v2_b0", seed=5)
    path = tmp_path / "pvt.pth"
    torch.save(state, path)
    backbone = build_backbone(_cfg("pvt_v2_b0", weights=str(path), freeze_at=1))
    body = backbone.body
    assert not any(p.requires_grad for p in body.patch_embed.parameters())
    assert not any(p.requires_grad for p in body.stages_0.parameters())
    assert all(p.requires_grad for p in body.stages_1.parameters())
    assert torch.equal(body.stages_0.blocks[0].attn.q.weight, state["stages.0.blocks.0.attn.q.weight"])
    with pytest.raises(ValueError, match="FREEZE_AT=5"):
        build_backbone(_cfg("pvt_v2_b0", freeze_at=5))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"NAME": "no_such_net"}, "no model named 'no_such_net'"),
        ({"NAME": "resnet18", "OUT_INDICES": [2, 3, 4, 5]}, "feature levels"),
        ({"NAME": "pvt_v2_b0", "OUT_FEATURES": ["res2", "res3"]}, "equal length"),
        ({"NAME": "pvt_v2_b0", "OUT_INDICES": [0, 2, 1, 3]}, "strictly increasing"),
    ],
)
def test_bad_config_is_a_clear_error(overrides, message):
    cfg = _cfg("pvt_v2_b0")
    for key, value in overrides.items():
        setattr(cfg.MODEL.TIMM_BACKBONE, key, value)
    with pytest.raises(ValueError, match=message):
        build_backbone(cfg)


class _Model(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("checkpointer_cls", [DetectionCheckpointer, AQCheckpointer])
def test_convert_timm_tool_gives_model_weights_checkpoint(tmp_path, checkpointer_cls):
    state = _classification_state("pvt_v2_b0", seed=6)
    src = tmp_path / "pvt_v2_b0.safetensors"
    save_file(state, str(src))
    out = str(tmp_path / "pvt_v2_b0_d2.pth")
    _load_tool("convert_timm_backbone").main([str(src), out, "--model", "pvt_v2_b0"])
    saved = torch.load(out, weights_only=True)
    assert saved["matching_heuristics"] is False
    assert "backbone.body.stages_3.norm.weight" in saved["model"]
    assert not any("head" in k for k in saved["model"])
    model = _Model(build_backbone(_cfg("pvt_v2_b0")))
    model_keys = set(model.state_dict())
    assert set(saved["model"]) == model_keys
    checkpointer_cls(model).load(out)
    mapping = {k: "stages_" + k[len("stages."):] if k.startswith("stages.") else k
               for k in state if not k.startswith("head.")}
    _assert_body_matches(model.backbone, state, mapping)


def test_convert_timm_tool_refuses_incomplete_checkpoint(tmp_path):
    state = _classification_state("resnet18", seed=7)
    del state["layer3.0.conv1.weight"]
    src = tmp_path / "resnet18.pth"
    torch.save(state, src)
    with pytest.raises(ValueError, match="resnet18.pth.*missing"):
        _load_tool("convert_timm_backbone").main([str(src), str(tmp_path / "o.pth"), "--model", "resnet18"])
