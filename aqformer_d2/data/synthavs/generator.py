"""SynthAVS writer for the AVSBench-object layout (S4: ``Single-source/``, MS3: ``Multi-sources/``).

Clips come from :func:`~aqformer_d2.data.synthavs.clip.synthesize_clip` (variants "s4" and "ms3"):
5 frames with 2-4 (S4) or 4-5 (MS3) objects, one (S4) or a changing set (MS3) of them sounding.
The ground-truth mask of a frame is the union of the *visible* pixels of the objects sounding
during that frame. The same seed and parameters give byte-identical files. See docs/synthavs.md.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Dict, Iterator, Optional, Tuple, Union

import numpy as np
import soundfile as sf

from .clip import MAX_CATEGORIES, NUM_FRAMES, SPLITS, SynthClip, _check_clip_args, category_names, synthesize_clip
from .files import (
    dump_tensor,
    load_logmel_fn,
    logmel_tensor,
    prepare_root,
    resolve_split_sizes,
    save_png,
    write_csv,
    write_json,
)
from .sounds import CATEGORY_SOUNDS, SAMPLE_RATE

__all__ = [
    "FORMAT_VERSION",
    "DEFAULT_SPLIT_SIZES",
    "MANIFEST_NAME",
    "CLIPS_METADATA_NAME",
    "generate_synthavs",
]

logger = logging.getLogger(__name__)

# Bump whenever the generated content changes, so an older dataset is never silently reused.
FORMAT_VERSION = 2  # 2: strict MS3 (4-5 objects, >= 2 silent, sounding set changes every second)
VARIANTS = ("s4", "ms3")
DEFAULT_SPLIT_SIZES: Dict[str, Dict[str, int]] = {
    "s4": {"train": 2000, "val": 200, "test": 200},
    "ms3": {"train": 1500, "val": 150, "test": 150},
}
MANIFEST_NAME = "synthavs_manifest.json"
CLIPS_METADATA_NAME = "synthavs_clips.jsonl"

_S4_DIR = "Single-source"
_MS3_DIR = "Multi-sources"


# ----------------------------------------------------------------------------- writing
def _clip_paths(root: str, clip: SynthClip, category: str) -> Dict[str, Any]:
    n, s = clip.name, clip.split
    if clip.variant == "s4":
        base = os.path.join(root, _S4_DIR, "s4_data")
        frame_dir = os.path.join(base, "visual_frames", s, category, n)
        mask_dir = os.path.join(base, "gt_masks", s, category, n)
        return {
            "frames": [os.path.join(frame_dir, f"{n}_{i}.png") for i in range(1, NUM_FRAMES + 1)],
            "masks": [os.path.join(mask_dir, f"{n}_{i}.png") for i in range(1, NUM_FRAMES + 1)],
            "wav": os.path.join(base, "audio_wav", s, category, f"{n}.wav"),
            "logmel": os.path.join(base, "audio_log_mel", s, category, f"{n}.pkl"),
        }
    base = os.path.join(root, _MS3_DIR, "ms3_data")
    frame_dir = os.path.join(base, "visual_frames", n)
    mask_dir = os.path.join(base, "gt_masks", s, n)
    return {
        "frames": [os.path.join(frame_dir, f"{n}.mp4_{i}.png") for i in range(1, NUM_FRAMES + 1)],
        "masks": [os.path.join(mask_dir, f"{n}_{i}.png") for i in range(1, NUM_FRAMES + 1)],
        "wav": os.path.join(base, "audio_wav", s, f"{n}.wav"),
        "logmel": os.path.join(base, "audio_log_mel", s, f"{n}.pkl"),
    }


def _write_clip(root: str, clip: SynthClip, record: Dict[str, Any], logmel_fn) -> None:
    paths = _clip_paths(root, clip, record.get("category", ""))
    for p in (paths["frames"][0], paths["masks"][0], paths["wav"], paths["logmel"]):
        os.makedirs(os.path.dirname(p), exist_ok=True)
    for f, p in enumerate(paths["frames"]):
        save_png(clip.frames[f], p, "RGB")
    # AVSBench S4 train is semi-supervised: only the first frame has a mask.
    num_masks = 1 if (clip.variant == "s4" and clip.split == "train") else NUM_FRAMES
    for f in range(num_masks):
        if clip.variant == "s4":
            save_png(clip.gt_masks[f].astype(np.uint8) * 255, paths["masks"][f], "L")
        else:
            save_png(clip.gt_masks[f].astype(np.uint8), paths["masks"][f], "P")
    sf.write(paths["wav"], clip.waveform, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    with open(paths["logmel"], "wb") as fh:
        dump_tensor(logmel_tensor(clip.waveform, logmel_fn), fh)


def _synthesize_and_write(job: Tuple[str, int, str, str, int, Dict[str, Any]]) -> Dict[str, Any]:
    """Synthesize clip ``(seed, variant, split, index)``, write its files under ``root``; its metadata record.

    A top-level function so that worker processes can run it: each clip depends only on its own
    arguments (``synthesize_clip`` seeds every clip independently), so the files do not depend on the
    process that writes them.
    """
    root, seed, variant, split, index, clip_kwargs = job
    clip = synthesize_clip(seed, variant, split, index, **clip_kwargs)
    record = clip.metadata()
    _write_clip(root, clip, record, load_logmel_fn())
    return record


def _one_thread() -> None:
    """Worker initializer: one torch thread per worker process, so that N workers use N cores."""
    import torch

    torch.set_num_threads(1)


def _records_in_order(jobs, workers: int) -> Iterator[Dict[str, Any]]:
    """The records of ``jobs`` in the order of ``jobs``, made in this process or in ``workers`` processes.

    Workers are spawned, not forked: a fork of a process whose torch thread pool is running can hang.
    """
    if workers == 1:
        yield from map(_synthesize_and_write, jobs)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_one_thread) as pool:
        yield from pool.map(_synthesize_and_write, jobs, chunksize=8)


# ----------------------------------------------------------------------------- dataset
def generate_synthavs(
    root: Union[str, os.PathLike],
    *,
    variant: str = "both",
    seed: int = 0,
    n_train: Optional[int] = None,
    n_val: Optional[int] = None,
    n_test: Optional[int] = None,
    image_size: int = 224,
    num_categories: int = MAX_CATEGORIES,
    snr_db: Optional[float] = 10.0,
    progress: bool = False,
    overwrite: bool = False,
    workers: int = 1,
) -> Dict[str, Any]:
    """Generate SynthAVS under ``root`` in the AVSBench layout (Single-source/, Multi-sources/).

    Args:
        root: output folder (created if needed).
        variant: "s4", "ms3" or "both".
        seed: non-negative int; the same seed and parameters give byte-identical files.
        n_train, n_val, n_test: clips per split for each generated variant; None takes the
            variant's default (S4 2000/200/200, MS3 1500/150/150).
        image_size: frame side in pixels (square frames), >= 32.
        num_categories: size of the category pool, in [8, 12].
        snr_db: level of one sound source over the background noise, in dB; None: no noise.
        progress: show a tqdm progress bar.
        overwrite: replace an existing SynthAVS dataset generated with different parameters.
        workers: processes that synthesize and write clips (1: this process only). The files are
            byte-identical for any number of workers; only the wall time changes.

    Returns:
        The manifest (also written to ``root/synthavs_manifest.json``): parameters, split sizes,
        category names, ``complete: True``, and ``skipped`` (True when an identical complete
        dataset already existed and nothing was written).

    Raises:
        ValueError: bad argument.
        FileExistsError: ``root`` holds a SynthAVS dataset with other parameters (and not
            ``overwrite``), or AVSBench-layout data that SynthAVS did not write.
        ImportError: the log-mel front end ``aqformer_d2.audio.logmel`` is missing.
    """
    if variant not in ("s4", "ms3", "both"):
        raise ValueError(f"variant must be 's4', 'ms3' or 'both', got {variant!r}")
    variants = VARIANTS if variant == "both" else (variant,)
    _check_clip_args(seed, variants[0], "train", 0, image_size, num_categories, snr_db)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    sizes = resolve_split_sizes(variants, n_train, n_val, n_test, DEFAULT_SPLIT_SIZES)
    root = os.fspath(root)
    load_logmel_fn()  # fail before touching anything on disk
    params = {
        "format_version": FORMAT_VERSION,
        "variant": variant,
        "seed": int(seed),
        "splits": sizes,
        "image_size": int(image_size),
        "num_categories": int(num_categories),
        "snr_db": None if snr_db is None else float(snr_db),
    }
    os.makedirs(root, exist_ok=True)
    existing = prepare_root(root, params, overwrite, MANIFEST_NAME, (_S4_DIR, _MS3_DIR), "AVSBench")
    if existing is not None:
        logger.info("SynthAVS at %s is complete with the same parameters: nothing to do", root)
        existing["skipped"] = True
        return existing
    manifest: Dict[str, Any] = {
        "generator": "SynthAVS",
        "params": params,
        "categories": category_names(num_categories),
        "category_sounds": [CATEGORY_SOUNDS[i][0] for i in range(num_categories)],
        "clips_metadata": {v: os.path.join(_S4_DIR if v == "s4" else _MS3_DIR, CLIPS_METADATA_NAME) for v in variants},
        "complete": False,
    }
    manifest_path = os.path.join(root, MANIFEST_NAME)
    write_json(manifest_path, manifest)

    total = sum(sum(s.values()) for s in sizes.values())
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="SynthAVS", unit="clip")
    logger.info("Generating SynthAVS (%d clips) at %s with %s", total, root, params)
    try:
        for v in variants:
            vdir = os.path.join(root, _S4_DIR if v == "s4" else _MS3_DIR)
            os.makedirs(vdir, exist_ok=True)
            rows, records = [], []
            clip_kwargs = {"image_size": image_size, "num_categories": num_categories, "snr_db": snr_db}
            jobs = [(root, seed, v, split, index, clip_kwargs) for split in SPLITS for index in range(sizes[v][split])]
            for record in _records_in_order(jobs, workers):
                records.append(record)
                if v == "s4":
                    rows.append([record["name"], 0, record["category"], record["split"]])
                else:
                    heard = sorted({c for second in record["sounding_categories"] for c in second})
                    rows.append([record["name"], 0, ";".join(heard), record["split"]])
                if bar is not None:
                    bar.update(1)
            if v == "s4":
                write_csv(os.path.join(vdir, "s4_meta_data.csv"), ["name", "start", "category", "split"], rows)
            else:
                write_csv(os.path.join(vdir, "ms3_meta_data.csv"), ["name", "start", "categories", "split"], rows)
            with open(os.path.join(vdir, CLIPS_METADATA_NAME), "w", encoding="utf-8") as fh:
                for record in records:
                    fh.write(json.dumps(record, sort_keys=True) + "\n")
    finally:
        if bar is not None:
            bar.close()
    manifest["complete"] = True
    write_json(manifest_path, manifest)
    logger.info("SynthAVS written to %s", root)
    manifest["skipped"] = False
    return manifest