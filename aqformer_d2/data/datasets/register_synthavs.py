"""Registration of the generated SynthAVS benchmark (datasets/prepare_synthavs.py).

SynthAVS is written in the AVSBench on-disk layout, so it is registered with the same loader as
AVSBench: ``synthavs_{s4,ms3}_{train,val,test}``.
"""
import os
from typing import List, Optional, Sequence

from .register_avsbench import AUDIO_SOURCES, register_avs_layout

__all__ = ["get_synthavs_root", "register_all_synthavs", "register_all_synthavs_from_cfg"]


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


def register_all_synthavs_from_cfg(cfg) -> List[str]:
    """Register SynthAVS with the root and audio source of ``cfg``."""
    return register_all_synthavs(get_synthavs_root(cfg), audio_sources=(cfg.INPUT.AUDIO.SOURCE,))
