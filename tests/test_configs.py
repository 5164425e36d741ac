"""Every yaml under configs/ loads; every key added by add_aqformer_config is read by some code."""
import glob
import os
import re

import pytest
from detectron2.config import CfgNode, get_cfg

from aqformer_d2 import add_aqformer_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))


def _cfg():
    cfg = get_cfg()
    add_aqformer_config(cfg)
    return cfg


def test_there_are_configs_for_both_tasks_and_backbones():
    names = {os.path.relpath(p, REPO) for p in CONFIGS}
    for expected in ("configs/avsbench/s4/aqformer_R50.yaml", "configs/avsbench/s4/aqformer_PVTv2b5.yaml",
                     "configs/avsbench/ms3/aqformer_R50.yaml", "configs/avsbench/ms3/aqformer_PVTv2b5.yaml",
                     "configs/synthavs/aqformer_tiny_s4.yaml"):
        assert expected in names


def _is_avss(path):
    return os.path.basename(path).startswith("Base-AVSS") or "/avss/" in path or path.endswith("_avss.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, REPO) for p in CONFIGS])
def test_config_loads(path):
    cfg = _cfg()
    cfg.merge_from_file(path)
    if _is_avss(path):  # AVSBench-semantic: 10-frame clips (5-frame ones padded), the AVSS head
        assert cfg.MODEL.META_ARCHITECTURE == "AQFormerSemantic"
        assert cfg.MODEL.AQFORMER.TRANSFORMER_DECODER_NAME == "AudioQueriedSemanticDecoder"
        assert cfg.MODEL.AQFORMER.NUM_FRAMES == 10
        assert cfg.INPUT.DATASET_MAPPER_NAME == "AVSSClipMapper"
    else:
        assert cfg.MODEL.META_ARCHITECTURE == "AQFormer"
        assert cfg.MODEL.AQFORMER.NUM_FRAMES == 5
    assert cfg.INPUT.FORMAT == "RGB"


@pytest.mark.parametrize("backbone", ["R50", "PVTv2b5"])
def test_avss_recipe_is_combo_avs(backbone):
    """configs/avsbench/avss/: COMBO-AVS's published AVSS settings (sources named in Base-AVSS.yaml)."""
    cfg = _cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "avsbench", "avss", f"aqformer_{backbone}.yaml"))
    sem, solver = cfg.MODEL.AQ_SEMANTIC, cfg.SOLVER
    assert (sem.NUM_CLASSES, sem.NUM_QUERIES, sem.NO_OBJECT_WEIGHT) == (71, 100, 0.1)
    assert (sem.CLASS_WEIGHT, sem.MASK_WEIGHT, sem.DICE_WEIGHT) == (2.0, 5.0, 5.0)
    assert (sem.COST_CLASS, sem.COST_MASK, sem.COST_DICE) == (2.0, 5.0, 5.0)
    assert (solver.OPTIMIZER, solver.BASE_LR, solver.WEIGHT_DECAY, solver.MAX_ITER) == ("ADAMW", 1e-4, 0.05, 90000)
    assert solver.IMS_PER_BATCH == 8 and solver.AMP.ENABLED and solver.BACKBONE_MULTIPLIER == 0.1
    assert solver.CLIP_GRADIENTS.CLIP_TYPE == "full_model" and solver.CLIP_GRADIENTS.CLIP_VALUE == 0.01
    assert 3 * cfg.MODEL.AQ_TRANSFORMER_DECODER.DEC_STAGES == 9
    assert cfg.MODEL.AUDIO_ENCODER.FREEZE and cfg.INPUT.IMAGE_SIZE == 224
    backbone_name = {"R50": "build_resnet_backbone", "PVTv2b5": "AQTimmBackbone"}[backbone]
    assert cfg.MODEL.BACKBONE.NAME == backbone_name
    # what the authors' release needs as it is: audio.wav only (no log-mel files), the avss_* datasets
    assert cfg.INPUT.AUDIO.SOURCE == "wav" and cfg.INPUT.DATASET_MAPPER_NAME == "AVSSClipMapper"
    assert cfg.DATASETS.TRAIN == ("avss_train",) and cfg.DATASETS.TEST == ("avss_val",)
    assert cfg.INPUT.AVSS.PAD_FRAMES == cfg.MODEL.AQFORMER.NUM_FRAMES == 10 and cfg.TEST.AVSS_PROTOCOL == "official"


def test_synthavs_avss_config():
    cfg = _cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "synthavs", "aqformer_tiny_avss.yaml"))
    assert cfg.MODEL.AQ_SEMANTIC.NUM_CLASSES == 9  # 8 SynthAVS categories + background
    assert cfg.DATASETS.TRAIN == ("synthavs_avss_train",) and cfg.DATASETS.TEST == ("synthavs_avss_test",)


@pytest.mark.parametrize("task,lr,iters", [("s4", 1.25e-4, 20000), ("ms3", 5e-4, 2000)])
def test_paper_settings_r50(task, lr, iters):
    cfg = _cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "avsbench", task, "aqformer_R50.yaml"))
    assert cfg.SOLVER.BASE_LR == pytest.approx(lr)
    assert cfg.SOLVER.MAX_ITER == iters
    assert cfg.SOLVER.IMS_PER_BATCH == 8 and cfg.SOLVER.OPTIMIZER == "ADAMW"
    assert cfg.SOLVER.WEIGHT_DECAY == pytest.approx(0.05)
    assert cfg.MODEL.AQ_TRANSFORMER_DECODER.DEC_STAGES == 3
    assert list(cfg.MODEL.AQ_PIXEL_DECODER.ABTI_POSITIONS) == [1, 2, 3, 4]
    assert (cfg.MODEL.AQFORMER.BCE_WEIGHT, cfg.MODEL.AQFORMER.DICE_WEIGHT, cfg.MODEL.AQFORMER.SIM_WEIGHT) == (1, 1, 1)


def _leaf_keys(node: CfgNode, prefix=""):
    for k, v in node.items():
        if isinstance(v, CfgNode):
            yield from _leaf_keys(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def test_every_added_key_is_read_somewhere():
    """No dead config keys: each key add_aqformer_config adds is read outside config.py."""
    base = get_cfg()
    cfg = _cfg()
    added = [k for k in _leaf_keys(cfg) if not _has_key(base, k)]
    assert len(added) > 40
    sources = []
    for pattern in ("aqformer_d2/**/*.py", "train_net.py", "demo/*.py", "tools/*.py", "bench/*.py"):
        for path in glob.glob(os.path.join(REPO, pattern), recursive=True):
            if not path.endswith("config.py"):
                with open(path) as f:
                    sources.append(f.read())
    text = "\n".join(sources)
    dead = []
    for key in added:
        if "." not in key:  # a top-level key (IMPORTS) is read as cfg.KEY
            if not re.search(rf"\bcfg\.{re.escape(key)}\b", text):
                dead.append(key)
            continue
        parent, leaf = key.rsplit(".", 1)
        group = parent.split(".")[-1]
        # read as cfg.A.B.LEAF, or through an alias of the group (e.g. q = cfg.MODEL.AQFORMER; q.LEAF)
        if not (re.search(rf"\b{re.escape(key)}\b", text) or
                (re.search(rf"\b{re.escape(group)}\b", text) and re.search(rf"\.{leaf}\b", text))):
            dead.append(key)
    assert not dead, f"config keys never read: {dead}"


def _has_key(node: CfgNode, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(node, CfgNode) or part not in node:
            return False
        node = node[part]
    return True
