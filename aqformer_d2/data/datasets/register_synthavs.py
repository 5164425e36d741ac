"""Registration of the generated SynthAVS benchmark (datasets/prepare_synthavs.py).

SynthAVS is written in the AVSBench on-disk layout, so it is registered with the same loader as
AVSBench: ``synthavs_{s4,ms3}_{train,val,test}``; SynthAVS-semantic in the AVSBench-semantic layout
with the AVSS loader (K = 9 classes): ``synthavs_avss_{train,val,test}`` and
``synthavs_avss_{v1s,v1m,v2}_{split}``.
"""
import os
from typing import List, Optional, Sequence

from .register_avsbench import AUDIO_SOURCES, register_avs_layout
from .register_avss import register_avss_layout

# Classes of SynthAVS-semantic: background + the 8 SynthAVS categories (aqformer_d2.data.synthavs.semantic).
SYNTHAVS_AVSS_NUM_CLASSES = 9

__all__ = [
    "SYNTHAVS_AVSS_NUM_CLASSES",
    "get_synthavs_avss_root",
    "get_synthavs_root",
    "register_all_synthavs",
    "register_all_synthavs_avss",
    "register_all_synthavs_from_cfg",
]


def get_synthavs_root(cfg=None) -> str:
    """``cfg.DATASETS.SYNTHAVS_ROOT`` when set, else ``$DETECTRON2_DATASETS/SynthAVS`` (default datasets/SynthAVS)."""
    if cfg is not None and cfg.DATASETS.SYNTHAVS_ROOT:
        return cfg.DATASETS.SYNTHAVS_ROOT
    return os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "SynthAVS")


def register_all_synthavs(root: Optional[str] = None, *, audio_sources: Sequence[str] = AUDIO_SOURCES) -> List[str]:
    """(Re-)register the 6 SynthAVS splits under ``root`` (default :func:`get_synthavs_root`)."""
    root = root or get_synthavs_root()
    names = register_avs_layout("synthavs", root, "s4", audio_sources=audio_sources)
    return names + register_avs_layout("synthavs", root, "ms3", audio_sources=audio_sources)


def get_synthavs_avss_root(cfg=None) -> str:
    """``cfg.DATASETS.SYNTHAVS_AVSS_ROOT`` when set, else ``$DETECTRON2_DATASETS/SynthAVS_semantic``."""
    if cfg is not None and cfg.DATASETS.SYNTHAVS_AVSS_ROOT:
        return cfg.DATASETS.SYNTHAVS_AVSS_ROOT
    return os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "SynthAVS_semantic")


def register_all_synthavs_avss(root: Optional[str] = None, *, audio_source: str = "wav") -> List[str]:
    """(Re-)register ``synthavs_avss_*`` under ``root`` (default :func:`get_synthavs_avss_root`)."""
    return register_avss_layout(
        "synthavs_avss", root or get_synthavs_avss_root(), num_classes=SYNTHAVS_AVSS_NUM_CLASSES, audio_source=audio_source
    )


def register_all_synthavs_from_cfg(cfg) -> List[str]:
    """Register SynthAVS and SynthAVS-semantic with the roots and audio source of ``cfg``."""
    names = register_all_synthavs(get_synthavs_root(cfg), audio_sources=(cfg.INPUT.AUDIO.SOURCE,))
    return names + register_all_synthavs_avss(get_synthavs_avss_root(cfg), audio_source=cfg.INPUT.AUDIO.SOURCE)
