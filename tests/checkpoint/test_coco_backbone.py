"""Backbone initialisation from detectron2-format COCO checkpoints (aqformer_d2/checkpoint/coco_backbone.py):
Mask2Former's ``backbone.res2...`` and detectron2 FPN's ``backbone.bottom_up.res2...`` layouts, in the model-zoo
``.pkl`` form (through the restricted unpickler) and the trainer's ``.pth`` form."""
import logging
import os
import pickle

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone
from detectron2.modeling.backbone.resnet import build_resnet_backbone

import aqformer_d2
from aqformer_d2.checkpoint import CheckpointFormatError, StateDictLoadError
from aqformer_d2.checkpoint.coco_backbone import COCO_BACKBONE_LAYOUTS, load_coco_backbone, select_coco_backbone
from aqformer_d2.utils.safe_pickle import UnsafePickleError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOGGER = "aqformer_d2.checkpoint.coco_backbone"


def _small_resnet(depth=18):
    cfg = get_cfg()
    aqformer_d2.add_aqformer_config(cfg)
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3"]  # res4/res5 are not built: small and fast
    return build_resnet_backbone(cfg, ShapeSpec(channels=3))


def _random_state(seed=1):
    """Values unlike the module's initialisation, so a load is visible."""
    gen = torch.Generator().manual_seed(seed)
    return {
        k: torch.rand(v.shape, generator=gen) + 0.5 if k.endswith("running_var") else torch.randn(v.shape, generator=gen)
        for k, v in _small_resnet().state_dict().items()
    }


# Head keys of the two kinds of COCO model (names as detectron2 / Mask2Former write them).
HEADS = {
    "mask2former": {
        "sem_seg_head.pixel_decoder.adapter_1.weight": (8, 4, 1, 1),
        "sem_seg_head.predictor.query_embed.weight": (100, 8),
        "sem_seg_head.predictor.class_embed.weight": (134, 8),
    },
    "fpn": {
        "backbone.fpn_lateral2.weight": (8, 64, 1, 1),
        "backbone.fpn_output2.weight": (8, 8, 3, 3),
        "proposal_generator.rpn_head.conv.weight": (8, 8, 3, 3),
        "roi_heads.box_predictor.cls_score.weight": (81, 16),
        "roi_heads.mask_head.predictor.weight": (80, 8, 1, 1),
    },
}


def _coco_checkpoint(layout, backbone_state):
    """{"model": {name: np.ndarray}} of a COCO model whose backbone holds ``backbone_state``."""
    prefix = COCO_BACKBONE_LAYOUTS[layout]
    model = {prefix + k: v.numpy() for k, v in backbone_state.items()}
    model.update({k: np.zeros(shape, np.float32) for k, shape in HEADS[layout].items()})
    return model


def _write_pkl(path, model):
    with open(path, "wb") as f:
        pickle.dump({"model": model, "__author__": "Detectron2 Model Zoo"}, f)  # the model zoo's .pkl form
    return str(path)


@pytest.mark.parametrize("layout", ["mask2former", "fpn"])
def test_model_zoo_pkl_loads_backbone_only(tmp_path, caplog, layout):
    expected = _random_state()
    path = _write_pkl(tmp_path / f"{layout}.pkl", _coco_checkpoint(layout, expected))
    backbone = _small_resnet()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        selection, report = load_coco_backbone(backbone, path)
    assert selection.layout == layout
    assert sorted(selection.skipped) == sorted(HEADS[layout])
    assert set(report.loaded) == set(expected) and not report.missing and not report.unexpected
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, expected[key]), key
    records = [r for r in caplog.records if r.name == LOGGER]
    assert len(records) == 1  # ONE summary line
    line = records[0].getMessage()
    assert f"{len(expected)} backbone tensors" in line and f"skipped {len(HEADS[layout])} other keys" in line
    assert ("roi_heads (2)" in line and "backbone.fpn_lateral2 (1)" in line) if layout == "fpn" else (
        "sem_seg_head (3)" in line
    )


def test_trainer_pth_form_loads(tmp_path):
    """A detectron2 trainer checkpoint: {"model": tensors, "iteration": ...} saved with torch.save."""
    expected = _random_state(seed=2)
    model = {k: torch.from_numpy(v) for k, v in _coco_checkpoint("mask2former", expected).items()}
    path = tmp_path / "model_final.pth"
    torch.save({"model": model, "iteration": 368749}, path)
    backbone = _small_resnet()
    selection, _ = load_coco_backbone(backbone, path)
    assert selection.layout == "mask2former"
    assert all(torch.equal(v, expected[k]) for k, v in backbone.state_dict().items())


def test_bn_step_counters_of_a_syncbn_model_are_skipped():
    """A COCO model trained with (Sync)BN stores num_batches_tracked; a FrozenBN backbone has none."""
    state = {k: torch.from_numpy(v) for k, v in _coco_checkpoint("fpn", _random_state()).items()}
    state["backbone.bottom_up.res2.0.conv1.norm.num_batches_tracked"] = torch.tensor(90000)
    selection = select_coco_backbone(state, _small_resnet().state_dict().keys())
    assert "backbone.bottom_up.res2.0.conv1.norm.num_batches_tracked" in selection.skipped
    assert "res2.0.conv1.norm.num_batches_tracked" not in selection.state_dict


def test_no_backbone_key_is_a_clear_error(tmp_path):
    path = _write_pkl(tmp_path / "head_only.pkl", {k: np.zeros(s, np.float32) for k, s in HEADS["mask2former"].items()})
    with pytest.raises(CheckpointFormatError, match=r"head_only.pkl: no backbone key found.*backbone.bottom_up."):
        load_coco_backbone(_small_resnet(), path)


def test_backbone_of_another_depth_is_rejected(tmp_path):
    """A ResNet-34's backbone (more blocks) for a ResNet-18: an error naming the file, nothing loaded."""
    deeper = {k: v for k, v in _small_resnet(depth=34).state_dict().items()}
    path = _write_pkl(tmp_path / "r34.pkl", _coco_checkpoint("fpn", deeper))
    backbone = _small_resnet()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    with pytest.raises(StateDictLoadError, match=r"r34.pkl: the backbone under 'backbone.bottom_up.'[\s\S]*res2.2"):
        load_coco_backbone(backbone, path)
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())


def test_pickle_naming_code_is_refused(tmp_path):
    """The .pkl goes through the restricted unpickler: a file that would call os.system is refused."""
    path = tmp_path / "evil.pkl"
    path.write_bytes(b"cos\nsystem\n(S'echo hacked'\ntR.")
    with pytest.raises(UnsafePickleError, match="os.system"):
        load_coco_backbone(_small_resnet(), path)


def test_keys_of_the_configured_r50_backbone():
    """configs/avsbench/s4/aqformer_R50.yaml builds detectron2's ResNet: stem.* and res2..res5.*, which both
    layouts reach by their prefix (checked without writing a 100 MB file)."""
    cfg = get_cfg()
    aqformer_d2.add_aqformer_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "avsbench", "s4", "aqformer_R50.yaml"))
    state = build_backbone(cfg).state_dict()
    assert {k.split(".")[0] for k in state} == {"stem", "res2", "res3", "res4", "res5"}
    for layout, prefix in COCO_BACKBONE_LAYOUTS.items():
        selection = select_coco_backbone({prefix + k: v for k, v in state.items()}, state.keys())
        assert selection.layout == layout and set(selection.state_dict) == set(state) and not selection.skipped
