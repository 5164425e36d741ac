"""Registration of the generated SynthAVS benchmark (datasets/prepare_synthavs.py).

SynthAVS is written in the AVSBench on-disk layout, so it is registered with the same loader as
AVSBench: ``synthavs_{s4,ms3}_{train,val,test}``; SynthAVS-semantic in the AVSBench-semantic layout
with the AVSS loader (K = 9 classes): ``synthavs_avss_{train,val,test}`` and
``synthavs_avss_{v1s,v1m,v2}_{split}``.
The S4 / MS3 dicts carry three more keys, read from the
generator's ``synthavs_clips.jsonl`` and ``synthavs_manifest.json``: ``"synthavs_category_ids"`` (the
category ids of ALL objects in the clip, sounding or silent), ``"synthavs_num_categories"`` (the
category pool) and ``"synthavs_snr_db"`` (the source-over-background-noise level the clips were made with,
None for no noise), which off-screen negatives need (aqformer_d2/data/negative_audio.py).
"""
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

from ..synthavs.generator import CLIPS_METADATA_NAME, MANIFEST_NAME
from .register_avsbench import AUDIO_SOURCES, AVSLayoutError, avs_layout_paths, load_avs_layout_split, register_avs_layout
from .register_avss import register_avss_layout

# Classes of SynthAVS-semantic: background + the 8 SynthAVS categories (aqformer_d2.data.synthavs.semantic).
SYNTHAVS_AVSS_NUM_CLASSES = 9

__all__ = [
    "SYNTHAVS_AVSS_NUM_CLASSES",
    "get_synthavs_avss_root",
    "get_synthavs_root",
    "load_synthavs_split",
    "register_all_synthavs",
    "register_all_synthavs_avss",
    "register_all_synthavs_from_cfg",
]


def get_synthavs_root(cfg=None) -> str:
    """``cfg.DATASETS.SYNTHAVS_ROOT`` when set, else ``$DETECTRON2_DATASETS/SynthAVS`` (default datasets/SynthAVS)."""
    if cfg is not None and cfg.DATASETS.SYNTHAVS_ROOT:
        return cfg.DATASETS.SYNTHAVS_ROOT
    return os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "SynthAVS")


def _read_json(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing; regenerate SynthAVS with datasets/prepare_synthavs.py")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _clip_objects(root: str, task: str) -> Tuple[Dict[str, List[int]], int, Optional[float]]:
    """(video name -> category ids of its objects, size of the category pool, SNR in dB or None) of one
    SynthAVS variant."""
    manifest_path = os.path.join(root, MANIFEST_NAME)
    params = _read_json(manifest_path)["params"]
    missing = [k for k in ("num_categories", "snr_db") if k not in params]
    if missing:
        raise AVSLayoutError(f"{manifest_path}: params lack {missing}; regenerate SynthAVS with datasets/prepare_synthavs.py")
    num_categories = int(params["num_categories"])
    snr_db = None if params["snr_db"] is None else float(params["snr_db"])
    jsonl = os.path.join(os.path.dirname(avs_layout_paths(root, task)["csv"]), CLIPS_METADATA_NAME)
    if not os.path.isfile(jsonl):
        raise FileNotFoundError(f"{jsonl}: missing; regenerate SynthAVS with datasets/prepare_synthavs.py")
    objects = {}
    with open(jsonl, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            try:
                record = json.loads(line)
                objects[record["name"]] = [int(o["category_id"]) for o in record["objects"]]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise AVSLayoutError(f"{jsonl}: line {line_no} is not a SynthAVS clip record ({e})") from e
    return objects, num_categories, snr_db


def load_synthavs_split(root: str, task: str, split: str, *, audio_sources: Sequence[str] = AUDIO_SOURCES) -> List[dict]:
    """:func:`load_avs_layout_split` plus ``"synthavs_category_ids"`` / ``"synthavs_num_categories"`` /
    ``"synthavs_snr_db"`` per dict.

    Raises:
        FileNotFoundError: the manifest or the clips' JSONL is missing.
        AVSLayoutError: a clip of the CSV has no record in the JSONL, or a record is malformed.
    """
    dicts = load_avs_layout_split(root, task, split, audio_sources=audio_sources)
    objects, num_categories, snr_db = _clip_objects(root, task)
    for d in dicts:
        if d["video_id"] not in objects:
            raise AVSLayoutError(f"{root}: clip {d['video_id']!r} has no record in the {task} {CLIPS_METADATA_NAME}")
        d["synthavs_category_ids"] = objects[d["video_id"]]
        d["synthavs_num_categories"] = num_categories
        d["synthavs_snr_db"] = snr_db
    return dicts


def register_all_synthavs(root: Optional[str] = None, *, audio_sources: Sequence[str] = AUDIO_SOURCES) -> List[str]:
    """(Re-)register the 6 SynthAVS splits under ``root`` (default :func:`get_synthavs_root`)."""
    root = root or get_synthavs_root()
    names = register_avs_layout("synthavs", root, "s4", audio_sources=audio_sources, load_fn=load_synthavs_split)
    return names + register_avs_layout("synthavs", root, "ms3", audio_sources=audio_sources, load_fn=load_synthavs_split)


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
