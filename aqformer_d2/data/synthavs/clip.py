"""SynthAVS clip synthesis: moving textured objects of distinct categories and their sounds.

A clip is T frames (one per second; T = 5, or 10 for the AVSS v2-like subset) showing moving,
partially overlapping textured objects of distinct categories on a textured background, plus T
seconds of 16 kHz audio in which some of the visible objects sound (each category has its own
sound) and at least one visible object is silent. Which objects sound, and how many, is set by the
clip's *kind* (:data:`CLIP_KINDS`): S4 / AVSS-v1s-like clips have one object sounding the whole
time; MS3 / AVSS-v1m-like / AVSS-v2-like clips have a sounding set that changes every second.
See docs/synthavs.md.

Everything is deterministic: clip ``index`` of ``split`` of ``variant`` is drawn from its own
``numpy.random.Generator`` seeded with ``(seed, variant, split, index)``, so any single clip can be
re-synthesised with :func:`synthesize_clip`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .shapes import CATEGORY_VISUALS, object_bbox, render_background, shape_inside, texture_rgb
from .sounds import CATEGORY_SOUNDS, NUM_SECONDS, SAMPLE_RATE, background_noise, category_sound, segment_gates

__all__ = [
    "CLIP_KINDS",
    "ClipKind",
    "MAX_CATEGORIES",
    "MIN_CATEGORIES",
    "MIN_IMAGE_SIZE",
    "NUM_FRAMES",
    "SPLITS",
    "SynthClip",
    "category_names",
    "clip_name",
    "synthesize_clip",
]

SPLITS = ("train", "val", "test")
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
MIN_CATEGORIES = 8
MAX_CATEGORIES = len(CATEGORY_VISUALS)
MIN_IMAGE_SIZE = 32
# Frames of an S4 / MS3 clip.
NUM_FRAMES = NUM_SECONDS

# Object geometry (fractions of the frame size) and visibility requirements.
_RADIUS_RANGE = (0.11, 0.19)
_MIN_VISIBLE_FRACTION = 0.5  # every object keeps >= half of its area visible in every frame
_MAX_GEOMETRY_TRIES = 400
# Audio levels: every source has this RMS (before a +-2 dB gain jitter); noise is set relative to it.
_SOURCE_RMS = 0.1
# Mixture schedule: probability of 0 / 1 / 2 / 3 sources in a second (renormalised to what is possible).
# Mostly one source, so that a model that cannot hear which object sounds (audio-blind) has no
# majority to segment; see docs/synthavs.md "Why audio is necessary".
_MS3_ACTIVE_COUNT_P = (0.04, 0.6, 0.33, 0.03)
# Mixture clips: objects per clip and the fewest of them that never sound (the silent distractors).
_MS3_NUM_OBJECTS = (4, 5)
_MS3_MIN_SILENT = 2

if len(CATEGORY_SOUNDS) != len(CATEGORY_VISUALS):
    raise ImportError("SynthAVS: every category needs both a shape (shapes.py) and a sound (sounds.py)")


@dataclass(frozen=True)
class ClipKind:
    """How a variant's clips are drawn.

    Attributes:
        rng_id: part of the clip's RNG seed (distinct per variant, so variants never share clips).
        num_frames: T, frames (= seconds) per clip.
        mixture: False: one object sounds for the whole clip (S4); True: a sounding set that changes
            every second among 2-3 sounders, with >= 2 silent objects (MS3).
    """

    rng_id: int
    num_frames: int
    mixture: bool


# S4 / MS3 are the AVSBench-object variants; v1s / v1m / v2 the AVSBench-semantic-like subsets.
CLIP_KINDS: Dict[str, ClipKind] = {
    "s4": ClipKind(rng_id=4, num_frames=5, mixture=False),
    "ms3": ClipKind(rng_id=3, num_frames=5, mixture=True),
    "v1s": ClipKind(rng_id=11, num_frames=5, mixture=False),
    "v1m": ClipKind(rng_id=12, num_frames=5, mixture=True),
    "v2": ClipKind(rng_id=13, num_frames=10, mixture=True),
}


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
        frames: uint8 ``[T, H, W, 3]`` RGB frames.
        full_masks: bool ``[T, K, H, W]`` pixels covered by each object's shape (occluded or not).
        visible_masks: bool ``[T, K, H, W]`` pixels where each object is visible (the top-most object).
        sounding: bool ``[T, K]`` whether object k sounds during second t.
        gt_masks: bool ``[T, H, W]`` union of the visible masks of the objects sounding at t.
        waveform: int16 ``[16000 T]`` 16 kHz mono audio as written to the WAV file.
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

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def semantic_labels(self) -> np.ndarray:
        """uint8 ``[T, H, W]``: 1 + category id of the visible sounding object at each pixel, 0 elsewhere
        (the AVSS ground truth: silent objects are background)."""
        labels = np.zeros(self.gt_masks.shape, dtype=np.uint8)  # [T, H, W]
        for k, c in enumerate(self.category_ids):
            labels[self.visible_masks[:, k] & self.sounding[:, k, None, None]] = c + 1
        return labels

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
            "sounding_categories": [[names[k] for k in np.flatnonzero(self.sounding[t])] for t in range(self.num_frames)],
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
    if variant not in CLIP_KINDS:
        raise ValueError(f"variant must be one of {tuple(CLIP_KINDS)}, got {variant!r}")
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
    return np.random.default_rng([int(seed), CLIP_KINDS[variant].rng_id, _SPLIT_IDS[split], int(index)])


def _sample_ms3_schedule(rng: np.random.Generator, num_objects: int, sounders: np.ndarray, num_frames: int) -> np.ndarray:
    """Per-second sounding sets ``[T, K]`` of a mixture clip: a different set every second, sometimes 2 at
    once, rarely none (at most one silent second per 5)."""
    n = sounders.size
    p = np.array(_MS3_ACTIVE_COUNT_P[: n + 1], dtype=np.float64)
    p /= p.sum()
    for _ in range(1000):
        active = np.zeros((num_frames, num_objects), dtype=bool)
        for t in range(num_frames):
            count = int(rng.choice(n + 1, p=p))
            active[t, rng.choice(sounders, size=count, replace=False)] = True
        every_sounder_sounds = active[:, sounders].any(axis=0).all()
        changes = all((active[t] != active[t + 1]).any() for t in range(num_frames - 1))
        few_silent_seconds = (~active.any(axis=1)).sum() <= num_frames // 5
        if every_sounder_sounds and changes and few_silent_seconds:
            return active
    raise RuntimeError("could not sample an MS3 sounding schedule (internal error)")


def _sample_objects(rng: np.random.Generator, kind: ClipKind, num_categories: int) -> Tuple[np.ndarray, np.ndarray]:
    """Categories (bottom-to-top, all distinct) and the sounding matrix ``[T, K]`` of a clip."""
    if not kind.mixture:
        num_objects = int(rng.choice([2, 3, 4], p=[0.3, 0.4, 0.3]))
    else:
        num_objects = int(rng.choice(_MS3_NUM_OBJECTS))
    category_ids = rng.choice(num_categories, size=num_objects, replace=False)
    if not kind.mixture:
        sounding = np.zeros((kind.num_frames, num_objects), dtype=bool)
        sounding[:, int(rng.integers(num_objects))] = True
    else:
        max_sounders = num_objects - _MS3_MIN_SILENT  # 2 (4 objects) or 3 (5 objects)
        num_sounders = int(rng.choice(np.arange(2, max_sounders + 1)))
        sounders = np.sort(rng.choice(num_objects, size=num_sounders, replace=False))
        sounding = _sample_ms3_schedule(rng, num_objects, sounders, kind.num_frames)
    return category_ids.astype(np.int64), sounding


@dataclass
class _Geometry:
    boxes: List[List[Tuple[int, int, int, int]]]  # [T][K]
    insides: List[List[np.ndarray]]  # [T][K] bool crops
    coords: List[List[Tuple[np.ndarray, np.ndarray]]]  # [T][K] object-local (u, v)
    owner: np.ndarray  # int8 [T, H, W]: index of the visible object, -1 for background


def _sample_geometry(rng: np.random.Generator, category_ids: np.ndarray, size: int, num_frames: int) -> _Geometry:
    """Smooth trajectories over T = num_frames frames with partial overlaps; rejection-sampled so every
    object stays >= 50% visible."""
    num_objects = category_ids.size
    times = np.arange(num_frames, dtype=np.float64) / (num_frames - 1)  # 0..1 over the clip
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

        owner = np.full((num_frames, size, size), -1, dtype=np.int8)
        boxes, insides, coords = [], [], []
        full_pixels = np.zeros((num_frames, num_objects), dtype=np.int64)
        for f in range(num_frames):
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
    num_frames = geometry.owner.shape[0]
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for f in range(num_frames):
        oy, ox = np.rint(pan_start + (pan_end - pan_start) * f / (num_frames - 1)).astype(int)
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
    """int16 ``[16000 T]`` (T = sounding.shape[0] seconds): gated category sounds of the sounding objects
    plus background noise."""
    num_samples = SAMPLE_RATE * sounding.shape[0]
    mix = np.zeros(num_samples, dtype=np.float64)
    sources = np.flatnonzero(sounding.any(axis=0))
    gates = segment_gates(sounding[:, sources], num_samples)
    for g, k in zip(gates, sources):
        gain = _SOURCE_RMS * 10.0 ** (rng.uniform(-2.0, 2.0) / 20.0)
        mix += gain * g * category_sound(int(category_ids[k]), rng, num_samples)
    if snr_db is not None:
        mix += _SOURCE_RMS * 10.0 ** (-float(snr_db) / 20.0) * background_noise(rng, num_samples)
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
    """Synthesise clip ``index`` of ``split`` of ``variant`` (a key of :data:`CLIP_KINDS`) in memory.

    :func:`~aqformer_d2.data.synthavs.generate_synthavs` (S4 / MS3) and
    :func:`~aqformer_d2.data.synthavs.generate_synthavs_semantic` (v1s / v1m / v2) write exactly
    these clips; calling this again with the same arguments returns identical arrays.

    Raises:
        ValueError: an argument is out of range.
    """
    _check_clip_args(seed, variant, split, index, image_size, num_categories, snr_db)
    rng = _clip_rng(seed, variant, split, index)
    kind = CLIP_KINDS[variant]
    category_ids, sounding = _sample_objects(rng, kind, num_categories)
    geometry = _sample_geometry(rng, category_ids, image_size, kind.num_frames)
    frames = _render_frames(rng, category_ids, geometry, image_size)
    waveform = _synthesize_audio(rng, category_ids, sounding, snr_db)

    num_objects = category_ids.size
    owner = geometry.owner
    visible = np.stack([owner == k for k in range(num_objects)], axis=1)  # [T, K, H, W]
    full = np.zeros_like(visible)
    for f in range(kind.num_frames):
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

