"""SynthAVS generator: synthetic audio-visual segmentation clips written in the AVSBench layout.

A clip is 5 frames (one per second) showing moving, partially overlapping textured objects of
distinct categories (S4: 2-4; MS3: 4-5) on a textured background, plus 5 s of 16 kHz audio in which
some of the visible objects sound (each category has its own sound) and at least one (MS3: two)
visible objects are silent.
The ground-truth mask of a frame is the union of the *visible* pixels of the objects sounding
during that frame. See docs/synthavs.md.

Everything is deterministic: clip ``index`` of ``split`` of ``variant`` is drawn from its own
``numpy.random.Generator`` seeded with ``(seed, variant, split, index)``, so the same seed gives
byte-identical files and any single clip can be re-synthesised with :func:`synthesize_clip`.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import pickle
import shutil
import struct
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from .shapes import CATEGORY_VISUALS, object_bbox, render_background, shape_inside, texture_rgb
from .sounds import (
    CATEGORY_SOUNDS,
    NUM_SAMPLES,
    NUM_SECONDS,
    SAMPLE_RATE,
    background_noise,
    category_sound,
    segment_gates,
)

__all__ = [
    "FORMAT_VERSION",
    "DEFAULT_SPLIT_SIZES",
    "MANIFEST_NAME",
    "CLIPS_METADATA_NAME",
    "MAX_CATEGORIES",
    "MIN_CATEGORIES",
    "SynthClip",
    "category_names",
    "clip_name",
    "synthesize_clip",
    "generate_synthavs",
]

logger = logging.getLogger(__name__)

# Bump whenever the generated content changes, so an older dataset is never silently reused.
FORMAT_VERSION = 2  # 2: strict MS3 (4-5 objects, >= 2 silent, sounding set changes every second)
VARIANTS = ("s4", "ms3")
SPLITS = ("train", "val", "test")
_VARIANT_IDS = {"s4": 4, "ms3": 3}
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
DEFAULT_SPLIT_SIZES: Dict[str, Dict[str, int]] = {
    "s4": {"train": 2000, "val": 200, "test": 200},
    "ms3": {"train": 1500, "val": 150, "test": 150},
}
MANIFEST_NAME = "synthavs_manifest.json"
CLIPS_METADATA_NAME = "synthavs_clips.jsonl"
MIN_CATEGORIES = 8
MAX_CATEGORIES = len(CATEGORY_VISUALS)
MIN_IMAGE_SIZE = 32
NUM_FRAMES = NUM_SECONDS

# Object geometry (fractions of the frame size) and visibility requirements.
_RADIUS_RANGE = (0.11, 0.19)
_MIN_VISIBLE_FRACTION = 0.5  # every object keeps >= half of its area visible in every frame
_MAX_GEOMETRY_TRIES = 400
# Audio levels: every source has this RMS (before a +-2 dB gain jitter); noise is set relative to it.
_SOURCE_RMS = 0.1
# MS3 schedule: probability of 0 / 1 / 2 / 3 sources in a second (renormalised to what is possible).
# Mostly one source, so that a model that cannot hear which object sounds (audio-blind) has no
# majority to segment; see docs/synthavs.md "Why audio is necessary".
_MS3_ACTIVE_COUNT_P = (0.04, 0.6, 0.33, 0.03)
# MS3 objects per clip and the fewest of them that never sound (the silent distractors).
_MS3_NUM_OBJECTS = (4, 5)
_MS3_MIN_SILENT = 2

_S4_DIR = "Single-source"
_MS3_DIR = "Multi-sources"

if len(CATEGORY_SOUNDS) != len(CATEGORY_VISUALS):
    raise ImportError("SynthAVS: every category needs both a shape (shapes.py) and a sound (sounds.py)")


def category_names(num_categories: int = MAX_CATEGORIES) -> List[str]:
    """Names of the first ``num_categories`` categories (the shape names, used as S4 folder names)."""
    _check_num_categories(num_categories)
    return [CATEGORY_VISUALS[i].shape for i in range(num_categories)]


def clip_name(variant: str, split: str, index: int) -> str:
    """Video name of a clip, e.g. ``synth_s4_train_00012``."""
    return f"synth_{variant}_{split}_{index:05d}"


@dataclass
class SynthClip:
    """One synthesised clip (K objects, listed bottom-to-top in drawing order).

    Attributes:
        name, variant, split, index: identity of the clip.
        category_ids: ``[K]`` category id of each object (all distinct).
        frames: uint8 ``[5, H, W, 3]`` RGB frames.
        full_masks: bool ``[5, K, H, W]`` pixels covered by each object's shape (occluded or not).
        visible_masks: bool ``[5, K, H, W]`` pixels where each object is visible (the top-most object).
        sounding: bool ``[5, K]`` whether object k sounds during second t.
        gt_masks: bool ``[5, H, W]`` union of the visible masks of the objects sounding at t.
        waveform: int16 ``[80000]`` 16 kHz mono audio as written to the WAV file.
    """

    name: str
    variant: str
    split: str
    index: int
    category_ids: List[int]
    frames: np.ndarray
    full_masks: np.ndarray
    visible_masks: np.ndarray
    sounding: np.ndarray
    gt_masks: np.ndarray
    waveform: np.ndarray

    def metadata(self) -> Dict[str, Any]:
        """JSON-serialisable description of the clip (one line of ``synthavs_clips.jsonl``)."""
        names = [CATEGORY_VISUALS[c].shape for c in self.category_ids]
        objects = []
        for k, c in enumerate(self.category_ids):
            objects.append(
                {
                    "category": names[k],
                    "category_id": int(c),
                    "z": k,
                    "sounding": [bool(s) for s in self.sounding[:, k]],
                    "visible_pixels": [int(n) for n in self.visible_masks[:, k].sum(axis=(1, 2))],
                    "full_pixels": [int(n) for n in self.full_masks[:, k].sum(axis=(1, 2))],
                }
            )
        record: Dict[str, Any] = {
            "name": self.name,
            "variant": self.variant,
            "split": self.split,
            "index": self.index,
            "objects": objects,
            "sounding_categories": [[names[k] for k in np.flatnonzero(self.sounding[t])] for t in range(NUM_FRAMES)],
            "mask_pixels": [int(n) for n in self.gt_masks.sum(axis=(1, 2))],
        }
        if self.variant == "s4":
            record["category"] = names[int(np.flatnonzero(self.sounding[0])[0])]
        return record


# ----------------------------------------------------------------------------- argument checks
def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _check_num_categories(num_categories) -> None:
    if not _is_int(num_categories) or not MIN_CATEGORIES <= num_categories <= MAX_CATEGORIES:
        raise ValueError(f"num_categories must be an int in [{MIN_CATEGORIES}, {MAX_CATEGORIES}], got {num_categories!r}")


def _check_clip_args(seed, variant, split, index, image_size, num_categories, snr_db) -> None:
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not _is_int(index) or index < 0:
        raise ValueError(f"index must be a non-negative int, got {index!r}")
    if not _is_int(image_size) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be an int >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    _check_num_categories(num_categories)
    if snr_db is not None and (isinstance(snr_db, bool) or not isinstance(snr_db, (int, float)) or not math.isfinite(snr_db)):
        raise ValueError(f"snr_db must be a finite number (dB) or None for no background noise, got {snr_db!r}")


# ----------------------------------------------------------------------------- clip sampling
def _clip_rng(seed: int, variant: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _VARIANT_IDS[variant], _SPLIT_IDS[split], int(index)])


def _sample_ms3_schedule(rng: np.random.Generator, num_objects: int, sounders: np.ndarray) -> np.ndarray:
    """Per-second sounding sets ``[T, K]`` for MS3: a different set every second, sometimes 2 at once, rarely none."""
    n = sounders.size
    p = np.array(_MS3_ACTIVE_COUNT_P[: n + 1], dtype=np.float64)
    p /= p.sum()
    for _ in range(1000):
        active = np.zeros((NUM_FRAMES, num_objects), dtype=bool)
        for t in range(NUM_FRAMES):
            count = int(rng.choice(n + 1, p=p))
            active[t, rng.choice(sounders, size=count, replace=False)] = True
        every_sounder_sounds = active[:, sounders].any(axis=0).all()
        changes = all((active[t] != active[t + 1]).any() for t in range(NUM_FRAMES - 1))
        at_most_one_silent_second = (~active.any(axis=1)).sum() <= 1
        if every_sounder_sounds and changes and at_most_one_silent_second:
            return active
    raise RuntimeError("could not sample an MS3 sounding schedule (internal error)")


def _sample_objects(rng: np.random.Generator, variant: str, num_categories: int) -> Tuple[np.ndarray, np.ndarray]:
    """Categories (bottom-to-top) and the sounding matrix ``[5, K]`` of a clip."""
    if variant == "s4":
        num_objects = int(rng.choice([2, 3, 4], p=[0.3, 0.4, 0.3]))
    else:
        num_objects = int(rng.choice(_MS3_NUM_OBJECTS))
    category_ids = rng.choice(num_categories, size=num_objects, replace=False)
    if variant == "s4":
        sounding = np.zeros((NUM_FRAMES, num_objects), dtype=bool)
        sounding[:, int(rng.integers(num_objects))] = True
    else:
        max_sounders = num_objects - _MS3_MIN_SILENT  # 2 (4 objects) or 3 (5 objects)
        num_sounders = int(rng.choice(np.arange(2, max_sounders + 1)))
        sounders = np.sort(rng.choice(num_objects, size=num_sounders, replace=False))
        sounding = _sample_ms3_schedule(rng, num_objects, sounders)
    return category_ids.astype(np.int64), sounding


@dataclass
class _Geometry:
    boxes: List[List[Tuple[int, int, int, int]]]  # [T][K]
    insides: List[List[np.ndarray]]  # [T][K] bool crops
    coords: List[List[Tuple[np.ndarray, np.ndarray]]]  # [T][K] object-local (u, v)
    owner: np.ndarray  # int8 [T, H, W]: index of the visible object, -1 for background


def _sample_geometry(rng: np.random.Generator, category_ids: np.ndarray, size: int) -> _Geometry:
    """Smooth trajectories with partial overlaps; rejection-sampled so every object stays >= 50% visible."""
    num_objects = category_ids.size
    times = np.arange(NUM_FRAMES, dtype=np.float64) / (NUM_FRAMES - 1)  # 0..1 over the clip
    min_visible = max(6, int(0.004 * size * size))
    scale = 1.0
    for attempt in range(_MAX_GEOMETRY_TRIES):
        if attempt and attempt % 40 == 0:
            scale *= 0.9  # crowded draws keep failing: shrink the objects a little
        radii = rng.uniform(*_RADIUS_RANGE, size=num_objects) * size * scale
        lo, hi = radii[:, None], size - radii[:, None]
        start = rng.uniform(lo, hi, size=(num_objects, 2))
        end = rng.uniform(lo, hi, size=(num_objects, 2))
        wobble_amp = rng.uniform(0.0, 0.05 * size, size=(num_objects, 2))
        wobble_freq = rng.uniform(0.3, 1.0, size=(num_objects, 2))  # cycles over the clip
        wobble_phase = rng.uniform(0.0, 2.0 * np.pi, size=(num_objects, 2))
        angle0 = rng.uniform(0.0, 2.0 * np.pi, size=num_objects)
        spin = rng.uniform(-0.35, 0.35, size=num_objects)  # radians per second
        t = times[:, None, None]
        centres = start + (end - start) * t + wobble_amp * (
            np.sin(2.0 * np.pi * wobble_freq * t + wobble_phase) - np.sin(wobble_phase)
        )  # [T, K, 2] as (x, y)
        centres = np.clip(centres, lo[None], hi[None])

        owner = np.full((NUM_FRAMES, size, size), -1, dtype=np.int8)
        boxes, insides, coords = [], [], []
        full_pixels = np.zeros((NUM_FRAMES, num_objects), dtype=np.int64)
        for f in range(NUM_FRAMES):
            boxes.append([])
            insides.append([])
            coords.append([])
            for k in range(num_objects):
                cx, cy = centres[f, k]
                box = object_bbox(cx, cy, radii[k], size, size)
                inside, u, v = shape_inside(
                    CATEGORY_VISUALS[int(category_ids[k])].shape, cx, cy, radii[k], angle0[k] + spin[k] * f, box
                )
                y0, y1, x0, x1 = box
                owner[f, y0:y1, x0:x1][inside] = k
                full_pixels[f, k] = int(inside.sum())
                boxes[f].append(box)
                insides[f].append(inside)
                coords[f].append((u, v))
        visible_pixels = np.stack([(owner == k).sum(axis=(1, 2)) for k in range(num_objects)], axis=1)
        if (visible_pixels >= min_visible).all() and (visible_pixels >= _MIN_VISIBLE_FRACTION * full_pixels).all():
            return _Geometry(boxes, insides, coords, owner)
    raise RuntimeError(f"could not place {num_objects} objects in a {size}x{size} frame (internal error)")


def _render_frames(rng: np.random.Generator, category_ids: np.ndarray, geometry: _Geometry, size: int) -> np.ndarray:
    """RGB frames ``[T, H, W, 3]`` uint8: panning textured background, then objects bottom-to-top."""
    pad = max(1, int(math.ceil(0.04 * size)))
    background = render_background(rng, size + 2 * pad, size + 2 * pad)
    pan_start = rng.uniform(0, 2 * pad, size=2)
    pan_end = rng.uniform(0, 2 * pad, size=2)
    colours = []
    for c in category_ids:
        visual = CATEGORY_VISUALS[int(c)]
        brightness = rng.uniform(0.9, 1.1)
        primary = np.clip((np.array(visual.primary, np.float32) + rng.uniform(-15, 15, 3)) * brightness, 0, 255)
        secondary = np.clip((np.array(visual.secondary, np.float32) + rng.uniform(-15, 15, 3)) * brightness, 0, 255)
        colours.append((visual, primary.astype(np.float32), secondary.astype(np.float32)))
    frames = np.empty((NUM_FRAMES, size, size, 3), dtype=np.uint8)
    for f in range(NUM_FRAMES):
        oy, ox = np.rint(pan_start + (pan_end - pan_start) * f / (NUM_FRAMES - 1)).astype(int)
        frame = background[oy : oy + size, ox : ox + size].copy()
        for k in range(category_ids.size):
            y0, y1, x0, x1 = geometry.boxes[f][k]
            inside = geometry.insides[f][k]
            visual, primary, secondary = colours[k]
            u, v = geometry.coords[f][k]
            rgb = texture_rgb(visual, u, v, primary, secondary)
            frame[y0:y1, x0:x1][inside] = rgb[inside]
        frames[f] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return frames


def _synthesize_audio(rng: np.random.Generator, category_ids: np.ndarray, sounding: np.ndarray, snr_db) -> np.ndarray:
    """int16 ``[80000]``: gated category sounds of the sounding objects plus background noise."""
    mix = np.zeros(NUM_SAMPLES, dtype=np.float64)
    sources = np.flatnonzero(sounding.any(axis=0))
    gates = segment_gates(sounding[:, sources])
    for g, k in zip(gates, sources):
        gain = _SOURCE_RMS * 10.0 ** (rng.uniform(-2.0, 2.0) / 20.0)
        mix += gain * g * category_sound(int(category_ids[k]), rng)
    if snr_db is not None:
        mix += _SOURCE_RMS * 10.0 ** (-float(snr_db) / 20.0) * background_noise(rng)
    return np.clip(np.rint(mix * 32768.0), -32768, 32767).astype(np.int16)


def synthesize_clip(
    seed: int,
    variant: str,
    split: str,
    index: int,
    *,
    image_size: int = 224,
    num_categories: int = MAX_CATEGORIES,
    snr_db: Optional[float] = 10.0,
) -> SynthClip:
    """Synthesise clip ``index`` of ``split`` of ``variant`` ("s4" or "ms3") in memory.

    :func:`generate_synthavs` writes exactly these clips; calling this again with the same
    arguments returns identical arrays.

    Raises:
        ValueError: an argument is out of range.
    """
    _check_clip_args(seed, variant, split, index, image_size, num_categories, snr_db)
    rng = _clip_rng(seed, variant, split, index)
    category_ids, sounding = _sample_objects(rng, variant, num_categories)
    geometry = _sample_geometry(rng, category_ids, image_size)
    frames = _render_frames(rng, category_ids, geometry, image_size)
    waveform = _synthesize_audio(rng, category_ids, sounding, snr_db)

    num_objects = category_ids.size
    owner = geometry.owner
    visible = np.stack([owner == k for k in range(num_objects)], axis=1)  # [T, K, H, W]
    full = np.zeros_like(visible)
    for f in range(NUM_FRAMES):
        for k in range(num_objects):
            y0, y1, x0, x1 = geometry.boxes[f][k]
            full[f, k, y0:y1, x0:x1] = geometry.insides[f][k]
    gt = (visible & sounding[:, :, None, None]).any(axis=1)
    return SynthClip(
        name=clip_name(variant, split, index),
        variant=variant,
        split=split,
        index=int(index),
        category_ids=[int(c) for c in category_ids],
        frames=frames,
        full_masks=full,
        visible_masks=visible,
        sounding=sounding,
        gt_masks=gt,
        waveform=waveform,
    )


# ----------------------------------------------------------------------------- writing
def _load_logmel_fn() -> Callable[..., Any]:
    try:
        from aqformer_d2.audio.logmel import waveform_to_examples
    except ImportError as e:
        raise ImportError(
            "SynthAVS needs aqformer_d2.audio.logmel.waveform_to_examples to write audio_log_mel/*.pkl"
        ) from e
    return waveform_to_examples


def _logmel_tensor(waveform_int16: np.ndarray, logmel_fn) -> torch.Tensor:
    # Same scaling as VGGish's wavfile_to_examples: int16 / 32768.
    waveform = waveform_int16.astype(np.float32) / 32768.0
    examples = logmel_fn(waveform, SAMPLE_RATE, num_examples=NUM_FRAMES)
    examples = torch.as_tensor(examples, dtype=torch.float32).contiguous()
    if tuple(examples.shape) != (NUM_FRAMES, 1, 96, 64):
        raise RuntimeError(f"log-mel front end returned shape {tuple(examples.shape)}, expected (5, 1, 96, 64)")
    return examples


class _DeterministicTensorPickler(pickle.Pickler):
    """``pickle.Pickler`` whose output for a CPU tensor does not depend on memory addresses.

    ``pickle.dump(tensor)`` embeds the storage as ``torch.storage._load_from_bytes(legacy torch.save
    bytes)``, and those bytes name the storage by its address (``str(storage._cdata)``), so two dumps
    of equal tensors differ. This pickler emits the same structure (same globals, loads with plain
    ``pickle.load`` and with :func:`aqformer_d2.utils.safe_pickle.load_pickle_restricted`) with the
    storage key replaced by ``"0"``.
    """

    def reducer_override(self, obj):
        if not isinstance(obj, torch.storage.TypedStorage):
            return NotImplemented
        fn, args = obj.__reduce__()
        (data,) = args
        key = str(obj._untyped_storage._cdata).encode("ascii")
        token = b"X" + struct.pack("<I", len(key)) + key  # protocol-2 BINUNICODE of the key
        if data.count(token) != 2:
            raise RuntimeError("unexpected legacy torch.save layout: cannot make the log-mel pickle deterministic")
        return fn, (data.replace(token, b"X" + struct.pack("<I", 1) + b"0"),)


def _dump_tensor(tensor: torch.Tensor, fh) -> None:
    """Equivalent of ``pickle.dump(tensor, fh)`` (protocol 4) with byte-reproducible output."""
    _DeterministicTensorPickler(fh, protocol=4).dump(tensor)


def _save_png(array: np.ndarray, path: str, mode: str) -> None:
    if mode == "P":
        img = Image.fromarray(array.astype(np.uint8), mode="P")
        img.putpalette([0, 0, 0, 255, 255, 255] + [0, 0, 0] * 254)
    else:
        img = Image.fromarray(array, mode=mode)
    # zlib level 3: ~3x faster than Pillow's default 6 for ~10% larger frames.
    img.save(path, format="PNG", compress_level=3)


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
        _save_png(clip.frames[f], p, "RGB")
    # AVSBench S4 train is semi-supervised: only the first frame has a mask.
    num_masks = 1 if (clip.variant == "s4" and clip.split == "train") else NUM_FRAMES
    for f in range(num_masks):
        if clip.variant == "s4":
            _save_png(clip.gt_masks[f].astype(np.uint8) * 255, paths["masks"][f], "L")
        else:
            _save_png(clip.gt_masks[f].astype(np.uint8), paths["masks"][f], "P")
    sf.write(paths["wav"], clip.waveform, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    with open(paths["logmel"], "wb") as fh:
        _dump_tensor(_logmel_tensor(clip.waveform, logmel_fn), fh)


def _write_csv(path: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_json(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- dataset
def _resolve_sizes(variants, n_train, n_val, n_test) -> Dict[str, Dict[str, int]]:
    sizes = {}
    for variant in variants:
        sizes[variant] = {}
        for split, n in zip(SPLITS, (n_train, n_val, n_test)):
            if n is None:
                n = DEFAULT_SPLIT_SIZES[variant][split]
            elif not _is_int(n) or n < 0:
                raise ValueError(f"n_{split} must be a non-negative int or None (variant default), got {n!r}")
            if n > 99999:
                raise ValueError(f"n_{split} must be at most 99999 (clip names use 5 digits), got {n}")
            sizes[variant][split] = int(n)
    if not any(sum(s.values()) for s in sizes.values()):
        raise ValueError("nothing to generate: every split has 0 clips")
    return sizes


def _params_diff(old: Dict[str, Any], new: Dict[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def _prepare_root(root: str, params: Dict[str, Any], overwrite: bool) -> Optional[Dict[str, Any]]:
    """Return the existing manifest if the dataset is complete and identical; otherwise clean up or refuse."""
    manifest_path = os.path.join(root, MANIFEST_NAME)
    ours = [os.path.join(root, d) for d in (_S4_DIR, _MS3_DIR)]
    if os.path.isfile(manifest_path):
        try:
            with open(manifest_path, encoding="utf-8") as fh:
                manifest = json.load(fh)
            old_params = manifest["params"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RuntimeError(f"{manifest_path}: unreadable SynthAVS manifest ({e}); delete it or the folder") from e
        if old_params == params and manifest.get("complete") is True:
            return manifest
        if old_params != params and not overwrite:
            raise FileExistsError(
                f"{root} holds a SynthAVS dataset generated with different parameters ({_params_diff(old_params, params)}); "
                "pass overwrite=True (--overwrite) to replace it, or choose another root"
            )
        if old_params == params:
            logger.info("SynthAVS at %s is incomplete (interrupted run): regenerating it", root)
        else:
            logger.info("SynthAVS at %s: parameters changed (%s), replacing it", root, _params_diff(old_params, params))
        for d in ours:
            if os.path.isdir(d):
                shutil.rmtree(d)
        os.remove(manifest_path)
    elif any(os.path.exists(d) for d in ours):
        raise FileExistsError(
            f"{root} already holds {_S4_DIR}/ or {_MS3_DIR}/ but no {MANIFEST_NAME}: it is not a SynthAVS dataset "
            "(perhaps the real AVSBench). Refusing to write into it, even with overwrite; choose another root"
        )
    return None


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
    sizes = _resolve_sizes(variants, n_train, n_val, n_test)
    root = os.fspath(root)
    logmel_fn = _load_logmel_fn()  # fail before touching anything on disk
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
    existing = _prepare_root(root, params, overwrite)
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
    _write_json(manifest_path, manifest)

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
            for split in SPLITS:
                for index in range(sizes[v][split]):
                    clip = synthesize_clip(
                        seed, v, split, index, image_size=image_size, num_categories=num_categories, snr_db=snr_db
                    )
                    record = clip.metadata()
                    _write_clip(root, clip, record, logmel_fn)
                    records.append(record)
                    if v == "s4":
                        rows.append([clip.name, 0, record["category"], split])
                    else:
                        heard = sorted({c for second in record["sounding_categories"] for c in second})
                        rows.append([clip.name, 0, ";".join(heard), split])
                    if bar is not None:
                        bar.update(1)
            if v == "s4":
                _write_csv(os.path.join(vdir, "s4_meta_data.csv"), ["name", "start", "category", "split"], rows)
            else:
                _write_csv(os.path.join(vdir, "ms3_meta_data.csv"), ["name", "start", "categories", "split"], rows)
            with open(os.path.join(vdir, CLIPS_METADATA_NAME), "w", encoding="utf-8") as fh:
                for record in records:
                    fh.write(json.dumps(record, sort_keys=True) + "\n")
    finally:
        if bar is not None:
            bar.close()
    manifest["complete"] = True
    _write_json(manifest_path, manifest)
    logger.info("SynthAVS written to %s", root)
    manifest["skipped"] = False
    return manifest
