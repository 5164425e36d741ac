"""tools/convert_d2_coco_backbone.py: a COCO model-zoo .pkl in, a MODEL.WEIGHTS checkpoint out that
AQCheckpointer loads into the backbone of the configured model."""
import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import aqformer_d2  # noqa: F401
from aqformer_d2.checkpoint import AQCheckpointer, StateDictLoadError

TOOL = Path(__file__).resolve().parents[2] / "tools" / "convert_d2_coco_backbone.py"
# A small ResNet instead of the R50 of the default config (same code path, a 1 MB file).
SMALL = ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
         "MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3']"]


def _load_tool():
    spec = importlib.util.spec_from_file_location("convert_d2_coco_backbone_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Model(nn.Module):
    """Stands in for AQFormer: the backbone sits under ``backbone.``, beside other modules."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(3, 3)


def _fpn_pkl(path, tool, seed=0):
    """A detectron2 FPN model-zoo .pkl whose ResNet has random values; returns those values."""
    backbone = tool.build_aq_backbone(tool.build_config(tool.DEFAULT_CONFIG, SMALL))
    gen = torch.Generator().manual_seed(seed)
    values = {k: torch.rand(v.shape, generator=gen) + 0.5 for k, v in backbone.state_dict().items()}
    model = {"backbone.bottom_up." + k: v.numpy() for k, v in values.items()}
    model["backbone.fpn_lateral2.weight"] = np.zeros((8, 64, 1, 1), np.float32)
    model["roi_heads.box_predictor.cls_score.weight"] = np.zeros((81, 8), np.float32)
    with open(path, "wb") as f:
        pickle.dump({"model": model, "__author__": "Detectron2 Model Zoo"}, f)
    return values


def test_tool_output_loads_through_model_weights(tmp_path):
    tool = _load_tool()
    expected = _fpn_pkl(tmp_path / "model_final.pkl", tool)
    out = tool.main([str(tmp_path / "model_final.pkl"), str(tmp_path / "w" / "r18_coco.pth"), *SMALL])
    saved = torch.load(out, weights_only=True)
    assert set(saved["model"]) == {"backbone." + k for k in expected} and saved["matching_heuristics"] is False
    assert "fpn layout" in saved["__author__"]

    model = _Model(tool.build_aq_backbone(tool.build_config(tool.DEFAULT_CONFIG, SMALL)))
    head_before = model.head.weight.detach().clone()
    AQCheckpointer(model).load(out)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert torch.equal(model.head.weight, head_before)  # only the backbone is initialised


def test_tool_rejects_a_backbone_that_does_not_fit(tmp_path):
    tool = _load_tool()
    _fpn_pkl(tmp_path / "model_final.pkl", tool)
    deeper = ["MODEL.RESNETS.DEPTH", "34", *SMALL[2:]]  # ResNet-34 asked for, ResNet-18 in the file
    with pytest.raises(StateDictLoadError, match="model_final.pkl"):
        tool.main([str(tmp_path / "model_final.pkl"), str(tmp_path / "out.pth"), *deeper])
    assert not os.path.exists(tmp_path / "out.pth")
