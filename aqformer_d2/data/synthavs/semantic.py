"""SynthAVS-semantic: SynthAVS clips written in the AVSBench-semantic (AVSS) layout.

Three subsets like AVSBench-semantic's: ``v1s`` (5 frames, one object sounding the whole clip, among
2-4 objects), ``v1m`` (5 frames, 4-5 objects, a sounding set of 2-3 sounders that changes every
second) and ``v2`` (10 frames, like v1m over 10 seconds). Every clip shows silent objects of other
classes (categories are distinct within a clip). Classes: background (0) + the first 8 SynthAVS
categories (1..8), K = 9. A frame's label is the class of the visible sounding object at each pixel,
background elsewhere, written with AVSBench's palette (:func:`avss_palette`).

Layout (what aqformer_d2.data.datasets.register_avss reads)::

    metadata.csv                       vid, uid, split, label, a_obj (sounding classes, ";"-joined)
    label2idx.json                     {"background": 0, "<category>": 1 + category id}
    <label>/<uid>/frames/{i}.jpg       i = 0..T-1 (JPEG quality 95)
    <label>/<uid>/labels_rgb/{i}.png   v1s train: frame 0 only (as AVSBench-semantic), otherwise all
    <label>/<uid>/audio.wav            T s of 16 kHz PCM16
    <label>/<uid>/audio_log_mel.pkl    [T, 1, 96, 64] VGGish log-mel (what prepare_avsbench.py --task avss writes)
    synthavs_clips.jsonl               per clip: objects, sounding schedule, label classes per frame
    synthavs_semantic_manifest.json    parameters; a re-run with the same ones does nothing

The same seed and parameters give byte-identical files.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Optional, Union

import numpy as np
import soundfile as sf
from PIL import Image

from ..datasets.register_avss import AVSS_LOGMEL_NAME, AVSS_SUBSETS, avss_palette, supervised_frames
from ..datasets.register_synthavs import SYNTHAVS_AVSS_NUM_CLASSES
from .clip import MIN_CATEGORIES, SPLITS, SynthClip, _check_clip_args, category_names, synthesize_clip
from .files import dump_tensor, load_logmel_fn, logmel_tensor, prepare_root, resolve_split_sizes
from .files import save_png, write_csv, write_json
from .sounds import SAMPLE_RATE

__all__ = [
    "SEMANTIC_DEFAULT_SPLIT_SIZES",
    "SEMANTIC_FORMAT_VERSION",
    "SEMANTIC_MANIFEST_NAME",
    "generate_synthavs_semantic",
    "semantic_class_names",
]

logger = logging.getLogger(__name__)

SEMANTIC_FORMAT_VERSION = 1
SEMANTIC_MANIFEST_NAME = "synthavs_semantic_manifest.json"
CLIPS_METADATA_NAME = "synthavs_clips.jsonl"
# Small by default: the AVSS benchmark trains and evaluates on 2 CPU cores.
SEMANTIC_DEFAULT_SPLIT_SIZES: Dict[str, Dict[str, int]] = {
    "v1s": {"train": 300, "val": 30, "test": 30},
    "v1m": {"train": 300, "val": 30, "test": 30},
    "v2": {"train": 150, "val": 15, "test": 15},
}
_NUM_CATEGORIES = MIN_CATEGORIES
_JPEG_QUALITY = 95
_METADATA_HEADER = ["vid", "uid", "split", "label", "a_obj"]

if SYNTHAVS_AVSS_NUM_CLASSES != _NUM_CATEGORIES + 1:
    raise ImportError("SynthAVS-semantic: SYNTHAVS_AVSS_NUM_CLASSES must be the category count + background")


def semantic_class_names() -> list:
    """The K = 9 class names in index order: background, then the 8 SynthAVS categories."""
    return ["background"] + category_names(_NUM_CATEGORIES)


def _write_clip(root: str, clip: SynthClip, palette: np.ndarray, logmel_fn) -> Dict[str, Any]:
    """Write one clip's folder; returns its metadata record."""
    clip_dir = os.path.join(root, clip.variant, clip.name)
    for sub in ("frames", "labels_rgb"):
        os.makedirs(os.path.join(clip_dir, sub), exist_ok=True)
    for t in range(clip.num_frames):
        Image.fromarray(clip.frames[t], mode="RGB").save(
            os.path.join(clip_dir, "frames", f"{t}.jpg"), format="JPEG", quality=_JPEG_QUALITY
        )
    labels = clip.semantic_labels()  # [T, H, W] class indices
    for t in range(supervised_frames(clip.variant, clip.split)):
        save_png(palette[labels[t]], os.path.join(clip_dir, "labels_rgb", f"{t}.png"), "RGB")  # [H, W, 3]
    sf.write(os.path.join(clip_dir, "audio.wav"), clip.waveform, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    with open(os.path.join(clip_dir, AVSS_LOGMEL_NAME), "wb") as fh:
        dump_tensor(logmel_tensor(clip.waveform, logmel_fn, clip.num_frames), fh)
    record = clip.metadata()
    record["label_classes"] = [sorted(int(c) for c in np.unique(labels[t]) if c) for t in range(clip.num_frames)]
    return record


def generate_synthavs_semantic(
    root: Union[str, os.PathLike],
    *,
    seed: int = 0,
    n_train: Optional[int] = None,
    n_val: Optional[int] = None,
    n_test: Optional[int] = None,
    image_size: int = 224,
    snr_db: Optional[float] = 10.0,
    progress: bool = False,
    overwrite: bool = False,
) -> Dict[str, Any]:
    """Generate SynthAVS-semantic under ``root`` in the AVSBench-semantic layout (module docstring).

    Args:
        root: output folder (created if needed); it gets metadata.csv, label2idx.json, v1s/, v1m/, v2/.
        seed: non-negative int; the same seed and parameters give byte-identical files.
        n_train, n_val, n_test: clips per split for EACH subset; None: the subset's default
            (:data:`SEMANTIC_DEFAULT_SPLIT_SIZES`).
        image_size: frame side in pixels (square), >= 32.
        snr_db: level of one sound source over the background noise in dB; None: no noise.
        progress: tqdm progress bar.
        overwrite: replace a SynthAVS-semantic dataset generated with different parameters.

    Returns:
        the manifest (also ``root/synthavs_semantic_manifest.json``), with ``skipped`` True when an
        identical complete dataset was already there.

    Raises:
        ValueError: bad argument. FileExistsError: other parameters without ``overwrite``, or an
            AVSS-layout tree (e.g. the real AVSBench-semantic) that SynthAVS did not write.
    """
    _check_clip_args(seed, "v1s", "train", 0, image_size, _NUM_CATEGORIES, snr_db)
    sizes = resolve_split_sizes(AVSS_SUBSETS, n_train, n_val, n_test, SEMANTIC_DEFAULT_SPLIT_SIZES)
    root = os.fspath(root)
    logmel_fn = load_logmel_fn()  # fail before touching anything on disk
    params = {
        "format_version": SEMANTIC_FORMAT_VERSION,
        "seed": int(seed),
        "splits": sizes,
        "image_size": int(image_size),
        "num_categories": _NUM_CATEGORIES,
        "snr_db": None if snr_db is None else float(snr_db),
    }
    os.makedirs(root, exist_ok=True)
    owned = ("metadata.csv", "label2idx.json", CLIPS_METADATA_NAME) + AVSS_SUBSETS
    existing = prepare_root(root, params, overwrite, SEMANTIC_MANIFEST_NAME, owned, "AVSBench-semantic")
    if existing is not None:
        existing["skipped"] = True
        return existing
    names = semantic_class_names()
    manifest: Dict[str, Any] = {"generator": "SynthAVS-semantic", "params": params, "classes": names, "complete": False}
    manifest_path = os.path.join(root, SEMANTIC_MANIFEST_NAME)
    write_json(manifest_path, manifest)
    write_json(os.path.join(root, "label2idx.json"), {n: i for i, n in enumerate(names)})
    palette = avss_palette(len(names))

    total = sum(sum(s.values()) for s in sizes.values())
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="SynthAVS-semantic", unit="clip")
    logger.info("Generating SynthAVS-semantic (%d clips) at %s with %s", total, root, params)
    rows, records = [], []
    try:
        for subset in AVSS_SUBSETS:
            for split in SPLITS:
                for index in range(sizes[subset][split]):
                    clip = synthesize_clip(
                        seed, subset, split, index, image_size=image_size, num_categories=_NUM_CATEGORIES, snr_db=snr_db
                    )
                    record = _write_clip(root, clip, palette, logmel_fn)
                    records.append(record)
                    heard = sorted({names[c + 1] for k, c in enumerate(clip.category_ids) if clip.sounding[:, k].any()})
                    rows.append([clip.name, clip.name, split, subset, ";".join(heard)])
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    write_csv(os.path.join(root, "metadata.csv"), _METADATA_HEADER, rows)
    with open(os.path.join(root, CLIPS_METADATA_NAME), "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
    manifest["complete"] = True
    write_json(manifest_path, manifest)
    manifest["skipped"] = False
    return manifest
