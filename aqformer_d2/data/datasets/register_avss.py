"""AVSBench-semantic (AVSS) registration in detectron2's DatasetCatalog / MetadataCatalog.

The layout is the one the AVSBench authors release (official loader: OpenNLPLab/AVSBench
``avs_scripts/avss/color_dataloader.py``)::

    <root>/metadata.csv                     columns read by name: uid, split, label (+ vid, others ignored)
    <root>/label2idx.json                   {class name: index}, K = 71 entries, background = 0
    <root>/<label>/<uid>/frames/{i}.jpg     i = 0..T-1; T = 5 for label v1s / v1m, 10 for v2
    <root>/<label>/<uid>/labels_rgb/{i}.png colour masks; v1s train: frame 0 only, otherwise all T
    <root>/<label>/<uid>/audio.wav          T seconds of audio
    <root>/<label>/<uid>/audio_log_mel.pkl  optional: [T, 1, 96, 64] written by datasets/prepare_avsbench.py

A label pixel's class is the index of the palette colour it equals exactly (:func:`avss_palette`, the
palette of AVSBench's ``get_v2_pallete``); any other colour is an error naming the file, the colour
and where it is. SynthAVS-semantic (datasets/prepare_synthavs.py --avss) uses the same layout with
K = 9 classes, hence ``num_classes`` is a parameter everywhere (71 for AVSBench).

Registration is lazy: the loader reads metadata.csv, label2idx.json and checks the files when it is
called; every problem found is reported in one :class:`AVSSLayoutError` (file and what is wrong).
"""
from __future__ import annotations

import functools
import json
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from detectron2.data import MetadataCatalog

from .register_avsbench import AVS_SPLITS, AVSLayoutError, read_csv_rows, register_or_replace

__all__ = [
    "AVSS_IGNORE_LABEL",
    "AVSS_LOGMEL_NAME",
    "AVSS_NUM_CLASSES",
    "AVSS_PAD_FRAMES",
    "AVSS_SUBSETS",
    "AVSS_SUBSET_FRAMES",
    "AVSSLayoutError",
    "avss_palette",
    "get_avss_root",
    "load_avss_split",
    "load_label2idx",
    "read_avss_label",
    "register_avss_layout",
    "register_all_avss",
    "register_all_avss_from_cfg",
    "supervised_frames",
]

logger = logging.getLogger(__name__)

# Subsets (metadata column "label") and their frames per clip.
AVSS_SUBSET_FRAMES: Dict[str, int] = {"v1s": 5, "v1m": 5, "v2": 10}
AVSS_SUBSETS: Tuple[str, ...] = tuple(AVSS_SUBSET_FRAMES)
# Classes of AVSBench-semantic, background (index 0) included.
AVSS_NUM_CLASSES = 71
# The official loader pads every clip to this many frames.
AVSS_PAD_FRAMES = 10
AVSS_IGNORE_LABEL = 255
AVSS_LOGMEL_NAME = "audio_log_mel.pkl"
AUDIO_SOURCES: Tuple[str, ...] = ("logmel", "wav")
_REQUIRED_COLUMNS = ("uid", "split", "label")
_MAX_LISTED = 10


class AVSSLayoutError(AVSLayoutError):
    """A malformed AVSBench-semantic tree (the message names the file and what is wrong)."""


def get_avss_root(cfg=None) -> str:
    """The folder holding metadata.csv: ``cfg.DATASETS.AVSS_ROOT`` when set, else
    ``$DETECTRON2_DATASETS/AVSBench_semantic`` (default ``datasets/AVSBench_semantic``)."""
    if cfg is not None and cfg.DATASETS.AVSS_ROOT:
        return cfg.DATASETS.AVSS_ROOT
    return os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "AVSBench_semantic")


def avss_palette(num_classes: int = AVSS_NUM_CLASSES) -> np.ndarray:
    """uint8 ``[K, 3]`` RGB colour of each class index (AVSBench's ``get_v2_pallete``).

    The bits of j are dealt out in turn to R, G, B, most significant colour bit first: bit 3i of j
    sets bit 7 - i of R, bit 3i + 1 that of G, bit 3i + 2 that of B (the VOC palette). Background
    (0) is black; every index < 512 gets its own colour.
    """
    if not 1 <= num_classes <= 512:
        raise ValueError(f"num_classes must be in 1..512 for distinct palette colours, got {num_classes}")
    palette = np.zeros((num_classes, 3), dtype=np.uint8)
    for j in range(num_classes):
        code, i = j, 0
        while code > 0:
            for c in range(3):
                palette[j, c] |= ((code >> c) & 1) << (7 - i)
            code >>= 3
            i += 1
    return palette


def supervised_frames(subset: str, split: str) -> int:
    """How many leading frames of a clip carry a label: v1s train 1 (AVSBench-object S4 is
    semi-supervised), otherwise all of the subset's frames (official ``gt_temporal_mask_flag``)."""
    return 1 if (subset == "v1s" and split == "train") else AVSS_SUBSET_FRAMES[subset]


def load_label2idx(path: str, num_classes: int = AVSS_NUM_CLASSES) -> List[str]:
    """Class names in index order from a label2idx.json.

    Args:
        path: the JSON file, an object {name: index}.
        num_classes: K the file must have (71 for AVSBench-semantic, 9 for SynthAVS-semantic).

    Raises:
        AVSSLayoutError: unreadable file, not K entries, indices not exactly 0..K-1, or no
            "background" at index 0 (the message names the file).
    """
    try:
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
    except OSError as e:
        raise AVSSLayoutError(f"{path}: cannot read label2idx.json: {e}") from e
    except ValueError as e:
        raise AVSSLayoutError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(table, dict):
        raise AVSSLayoutError(f"{path}: expected a JSON object {{class name: index}}, got {type(table).__name__}.")
    if len(table) != num_classes:
        raise AVSSLayoutError(f"{path}: has {len(table)} entries, expected {num_classes} classes (background included).")
    bad = {k: v for k, v in table.items() if not isinstance(v, int) or isinstance(v, bool)}
    if bad:
        raise AVSSLayoutError(f"{path}: indices must be integers; offending entries: {dict(list(bad.items())[:5])}")
    if sorted(table.values()) != list(range(num_classes)):
        raise AVSSLayoutError(f"{path}: indices must be 0..{num_classes - 1}, each once; got {sorted(table.values())}.")
    if table.get("background") != 0:
        at_zero = [k for k, v in table.items() if v == 0]
        raise AVSSLayoutError(
            f"{path}: 'background' must have index 0 (found index {table.get('background')!r}; index 0 is {at_zero})."
        )
    names = [""] * num_classes
    for name, index in table.items():
        names[index] = name
    return names


def read_avss_label(path: str, palette: np.ndarray) -> np.ndarray:
    """Class index map uint8 ``[H, W]`` of a colour label PNG (read as RGB, as the official loader).

    Args:
        path: the labels_rgb PNG.
        palette: uint8 ``[K, 3]`` class colours (:func:`avss_palette`).

    Raises:
        OSError: unreadable image (names the file).
        AVSSLayoutError: a pixel colour that is no class's palette colour; the message names the file,
            each such colour (up to 5), its pixel count and its first pixel (row, column).
    """
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))  # [H, W, 3] uint8
    except OSError as e:
        raise OSError(f"Cannot read label {path}: {e}") from e
    code = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]  # [H, W]
    pal = palette.astype(np.int32)
    pal_code = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]  # [K]
    order = np.argsort(pal_code)
    sorted_code = pal_code[order]
    pos = np.clip(np.searchsorted(sorted_code, code), 0, len(sorted_code) - 1)  # [H, W]
    known = sorted_code[pos] == code  # [H, W]
    if not known.all():
        unknown, counts = np.unique(code[~known], return_counts=True)
        parts = []
        for c, n in list(zip(unknown, counts))[:5]:
            rows, cols = np.nonzero(code == c)
            parts.append(f"RGB({c >> 16}, {(c >> 8) & 255}, {c & 255}) on {n} pixel(s), first at (row {rows[0]}, column {cols[0]})")
        more = f"; and {len(unknown) - 5} more colours" if len(unknown) > 5 else ""
        raise AVSSLayoutError(
            f"{path}: colour(s) not in the {len(palette)}-class palette: " + "; ".join(parts) + more
            + " (labels must use get_v2_pallete colours exactly; was the PNG saved lossily or resized with interpolation?)"
        )
    return order[pos].astype(np.uint8)  # [H, W]


def _read_metadata(csv_file: str) -> List[Tuple[int, Dict[str, str]]]:
    """``(line, row by column name)`` for every data row of metadata.csv, validated."""
    rows = read_csv_rows(csv_file, AVSSLayoutError)
    header = [h.strip() for h in rows[0][1]]
    missing = [c for c in _REQUIRED_COLUMNS if c not in header]
    if missing:
        raise AVSSLayoutError(f"{csv_file}: header {header} lacks the column(s) {missing}.")
    out, seen = [], {}
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise AVSSLayoutError(f"{csv_file}: line {line} has {len(row)} columns, the header has {len(header)}: {row}")
        rec = dict(zip(header, (v.strip() for v in row)))
        if rec["split"] not in AVS_SPLITS:
            raise AVSSLayoutError(f"{csv_file}: line {line} has split {rec['split']!r}, expected one of {AVS_SPLITS}.")
        if rec["label"] not in AVSS_SUBSETS:
            raise AVSSLayoutError(f"{csv_file}: line {line} has label {rec['label']!r}, expected one of {AVSS_SUBSETS}.")
        if not rec["uid"]:
            raise AVSSLayoutError(f"{csv_file}: line {line} has an empty uid.")
        key = (rec["label"], rec["uid"])
        if key in seen:
            raise AVSSLayoutError(f"{csv_file}: line {line} repeats clip {key[0]}/{key[1]} (first at line {seen[key]}).")
        seen[key] = line
        out.append((line, rec))
    return out


def _clip_record(root: str, rec: Dict[str, str], audio_source: str) -> Tuple[dict, List[str]]:
    """Dataset dict (without height/width) of one metadata row and the problems of its files."""
    subset, uid, split = rec["label"], rec["uid"], rec["split"]
    clip_dir = os.path.join(root, subset, uid)
    if not os.path.isdir(clip_dir):
        return {}, [f"{clip_dir}: folder of metadata row uid={uid!r} label={subset!r} split={split!r} does not exist"]
    n = AVSS_SUBSET_FRAMES[subset]
    frames = [os.path.join(clip_dir, "frames", f"{i}.jpg") for i in range(n)]
    n_labels = supervised_frames(subset, split)
    labels: List[Optional[str]] = [
        os.path.join(clip_dir, "labels_rgb", f"{i}.png") if i < n_labels else None for i in range(n)
    ]
    problems = []
    absent = [i for i, p in enumerate(frames) if not os.path.isfile(p)]
    if absent:
        problems.append(
            f"{os.path.join(clip_dir, 'frames')}: has {n - len(absent)} of the {n} frames subset {subset} needs "
            f"(missing {', '.join(f'{i}.jpg' for i in absent)})"
        )
    absent = [i for i, p in enumerate(labels) if p is not None and not os.path.isfile(p)]
    if absent:
        problems.append(
            f"{os.path.join(clip_dir, 'labels_rgb')}: has {n_labels - len(absent)} of the {n_labels} labels "
            f"{subset} {split} needs (missing {', '.join(f'{i}.png' for i in absent)})"
        )
    wav = os.path.join(clip_dir, "audio.wav")
    logmel = os.path.join(clip_dir, AVSS_LOGMEL_NAME)
    needed = logmel if audio_source == "logmel" else wav
    if not os.path.isfile(needed):
        hint = " (write it: datasets/prepare_avsbench.py ROOT --task avss --compute-logmel)" if audio_source == "logmel" else ""
        problems.append(f"{needed}: missing (INPUT.AUDIO.SOURCE = {audio_source!r}){hint}")
    return {
        "video_id": uid,
        "uid": uid,
        "vid": rec.get("vid"),
        "task": "avss",
        "subset": subset,
        "split": split,
        "frame_files": frames,
        "label_files": labels,
        "audio_wav_file": wav,
        "audio_logmel_file": logmel if audio_source == "logmel" or os.path.isfile(logmel) else None,
        "num_frames": n,
    }, problems


def load_avss_split(
    root: str,
    split: str,
    *,
    subsets: Sequence[str] = AVSS_SUBSETS,
    num_classes: int = AVSS_NUM_CLASSES,
    audio_source: str = "wav",
    dataset_name: Optional[str] = None,
) -> List[dict]:
    """Load one split of an AVSBench-semantic-layout tree as dataset dicts (AVSS contract).

    Args:
        root: folder holding metadata.csv and label2idx.json.
        split: "train", "val" or "test".
        subsets: which subsets (metadata "label") to keep.
        num_classes: K label2idx.json must have (71 AVSBench-semantic, 9 SynthAVS-semantic).
        audio_source: "wav" or "logmel": which audio file must exist.
        dataset_name: when given, its MetadataCatalog entry gets ``stuff_classes`` from label2idx.json.

    Returns:
        ``{"video_id" (= uid), "uid", "vid", "task": "avss", "subset", "split", "frame_files" [T],
        "label_files" [T paths or None], "audio_wav_file", "audio_logmel_file" (or None), "num_frames"
        (T: 5 or 10, real frames), "num_classes" (K, for the palette), "height", "width"}`` in
        metadata order.

    Raises:
        FileNotFoundError: metadata.csv is missing.
        AVSSLayoutError: malformed metadata / label2idx.json, or clips whose folder, frames, labels or
            audio are missing (one error listing them, each with its path).
    """
    if split not in AVS_SPLITS:
        raise ValueError(f"Unknown AVSS split {split!r}; expected one of {AVS_SPLITS}.")
    if audio_source not in AUDIO_SOURCES:
        raise ValueError(f"Unknown audio source {audio_source!r}; expected one of {AUDIO_SOURCES}.")
    unknown = [s for s in subsets if s not in AVSS_SUBSETS]
    if unknown:
        raise ValueError(f"Unknown AVSS subset(s) {unknown}; expected among {AVSS_SUBSETS}.")
    csv_file = os.path.join(root, "metadata.csv")
    rows = _read_metadata(csv_file)
    names = load_label2idx(os.path.join(root, "label2idx.json"), num_classes)
    dicts, problems = [], []
    for _, rec in rows:
        if rec["split"] != split or rec["label"] not in subsets:
            continue
        d, p = _clip_record(root, rec, audio_source)
        problems.extend(p)
        if d:
            dicts.append(d)
    if problems:
        listed = "\n  ".join(problems[:_MAX_LISTED])
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise AVSSLayoutError(f"{len(problems)} problem(s) with the clips of split {split!r} of {csv_file}:\n  {listed}{more}")
    for d in dicts:
        d["num_classes"] = num_classes
        try:
            with Image.open(d["frame_files"][0]) as im:
                d["width"], d["height"] = im.size
        except OSError as e:
            raise OSError(f"Cannot read frame {d['frame_files'][0]}: {e}") from e
    if dataset_name is not None:
        meta = MetadataCatalog.get(dataset_name)
        if meta.get("stuff_classes") is None:
            meta.set(stuff_classes=names)
    logger.info("Loaded %d AVSS clips of split %r (subsets %s) from %s", len(dicts), split, list(subsets), csv_file)
    return dicts


def register_avss_layout(
    name_prefix: str, root: str, *, num_classes: int = AVSS_NUM_CLASSES, audio_source: str = "wav"
) -> List[str]:
    """Register ``{prefix}_{split}`` (all subsets) and ``{prefix}_{subset}_{split}`` lazily.

    Args:
        name_prefix: "avss" (AVSBench-semantic) or "synthavs_avss".
        root: folder holding metadata.csv.
        num_classes: K of label2idx.json (71 AVSBench-semantic).
        audio_source: "wav" or "logmel" (cfg.INPUT.AUDIO.SOURCE).

    Returns:
        the registered names.
    """
    names = []
    for split in AVS_SPLITS:
        for subsets, name in [(AVSS_SUBSETS, f"{name_prefix}_{split}")] + [
            ((s,), f"{name_prefix}_{s}_{split}") for s in AVSS_SUBSETS
        ]:
            loader = functools.partial(
                load_avss_split, root, split, subsets=subsets, num_classes=num_classes,
                audio_source=audio_source, dataset_name=name,
            )
            register_or_replace(name, loader, {
                "evaluator_type": "avss",
                "task": "avss",
                "split": split,
                "subsets": subsets,
                "root": root,
                "metadata_csv": os.path.join(root, "metadata.csv"),
                "label2idx_file": os.path.join(root, "label2idx.json"),
                "num_classes": num_classes,
                "stuff_colors": avss_palette(num_classes).tolist(),
                "ignore_label": AVSS_IGNORE_LABEL,
                "audio_source": audio_source,
            })
            names.append(name)
    return names


def register_all_avss(root: Optional[str] = None, *, audio_source: str = "wav") -> List[str]:
    """Register ``avss_*`` (AVSBench-semantic, K = 71) under ``root`` (default :func:`get_avss_root`)."""
    return register_avss_layout("avss", root or get_avss_root(), num_classes=AVSS_NUM_CLASSES, audio_source=audio_source)


def register_all_avss_from_cfg(cfg) -> List[str]:
    """(Re-)register ``avss_*`` with ``cfg.DATASETS.AVSS_ROOT`` and ``cfg.INPUT.AUDIO.SOURCE``."""
    return register_all_avss(get_avss_root(cfg), audio_source=cfg.INPUT.AUDIO.SOURCE)
