"""AVSBench-object (S4 / MS3) registration in detectron2's DatasetCatalog / MetadataCatalog.

The on-disk layout and CSV conventions follow the benchmark's official code (OpenNLPLab/AVSBench,
``avs_scripts/avs_s4/dataloader.py`` and ``avs_scripts/avs_ms3/dataloader.py``), see
docs/interfaces.md and the AVSBench notes:

S4 (``<root>/Single-source``), CSV ``s4_meta_data.csv`` with positional columns 0 = name, 1 = start,
2 = category, 3 = split; rows are selected on the column *named* ``split``::

    s4_data/visual_frames/{split}/{category}/{name}/{name}_{i}.png     i = 1..5
    s4_data/gt_masks/{split}/{category}/{name}/{name}_{i}.png          train: i = 1 only; val/test: 1..5
    s4_data/audio_log_mel/{split}/{category}/{name}.pkl
    s4_data/audio_wav/{split}/{category}/{name}.wav

MS3 (``<root>/Multi-sources``), CSV ``ms3_meta_data.csv`` with column 0 = name and a column named ``split``::

    ms3_data/visual_frames/{name}/{name}.mp4_{i}.png                   (no split folder, ".mp4_" infix)
    ms3_data/gt_masks/{split}/{name}/{name}_{i}.png                    i = 1..5 for every split
    ms3_data/audio_log_mel/{split}/{name}.pkl
    ms3_data/audio_wav/{split}/{name}.wav

Registration is lazy: the loader registered in DatasetCatalog reads the CSV and checks the files
only when it is called. At that point every referenced frame, mask and (required) audio file must
exist; missing ones are reported together in one error, never skipped.
"""
from __future__ import annotations

import csv
import functools
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = [
    "AVS_SPLITS",
    "AVS_TASKS",
    "AVS_NUM_FRAMES",
    "AVSLayoutError",
    "get_avs_root",
    "avs_layout_paths",
    "load_avs_layout_split",
    "register_avs_layout",
    "register_avsbench_s4",
    "register_avsbench_ms3",
    "register_all_avsbench",
    "register_all_avsbench_from_cfg",
    "read_avs_mask",
    "read_csv_rows",
    "register_or_replace",
]

logger = logging.getLogger(__name__)

AVS_SPLITS: Tuple[str, ...] = ("train", "val", "test")
AVS_TASKS: Tuple[str, ...] = ("s4", "ms3")
# T: frames per AVSBench clip (5 s of video, one frame per second).
AVS_NUM_FRAMES = 5
# Audio files whose existence is checked when a split is loaded: "logmel" (.pkl) and/or "wav".
AUDIO_SOURCES: Tuple[str, ...] = ("logmel", "wav")
# How many missing paths an error message lists before giving the count of the rest.
_MAX_LISTED = 10

_TASK_DIRS = {
    "s4": ("Single-source", "s4_data", "s4_meta_data.csv"),
    "ms3": ("Multi-sources", "ms3_data", "ms3_meta_data.csv"),
}
# Minimal number of CSV columns the official code indexes positionally (S4: name, start, category, split).
_MIN_COLUMNS = {"s4": 4, "ms3": 1}


class AVSLayoutError(ValueError):
    """A malformed AVSBench-layout metadata CSV (the message names the file and the row)."""


def get_avs_root(cfg=None) -> str:
    """The folder holding ``Single-source/`` and ``Multi-sources/``.

    ``cfg.DATASETS.AVS_ROOT`` when set (non-empty), else ``$DETECTRON2_DATASETS``, else ``"datasets"``.
    """
    if cfg is not None:
        root = cfg.DATASETS.AVS_ROOT
        if root:
            return root
    return os.getenv("DETECTRON2_DATASETS", "datasets")


def avs_layout_paths(root: str, task: str) -> Dict[str, str]:
    """Base directories and the metadata CSV of one task under ``root``."""
    _check_task(task)
    top, data, csv_name = _TASK_DIRS[task]
    base = os.path.join(root, top)
    return {
        "csv": os.path.join(base, csv_name),
        "frames": os.path.join(base, data, "visual_frames"),
        "masks": os.path.join(base, data, "gt_masks"),
        "logmel": os.path.join(base, data, "audio_log_mel"),
        "wav": os.path.join(base, data, "audio_wav"),
    }


def _check_task(task: str) -> None:
    if task not in AVS_TASKS:
        raise ValueError(f"Unknown AVS task {task!r}; expected one of {AVS_TASKS}.")


def _check_split(split: str) -> None:
    if split not in AVS_SPLITS:
        raise ValueError(f"Unknown AVS split {split!r}; expected one of {AVS_SPLITS}.")


def read_csv_rows(csv_file: str, error_cls: type = AVSLayoutError) -> List[Tuple[int, List[str]]]:
    """``(line number, fields)`` of the non-blank rows of a metadata CSV, header first.

    Raises:
        FileNotFoundError: no such file. error_cls: the file has no row at all.
    """
    if not os.path.isfile(csv_file):
        raise FileNotFoundError(f"Metadata CSV not found: {csv_file}")
    with open(csv_file, newline="", encoding="utf-8") as f:
        rows = [(n, row) for n, row in enumerate(csv.reader(f), start=1) if row]
    if not rows:
        raise error_cls(f"{csv_file}: empty CSV (no header row).")
    return rows


def _read_meta_csv(csv_file: str, task: str) -> Tuple[List[Tuple[int, List[str]]], int]:
    """Read and validate the metadata CSV.

    Returns ``(rows, split_col)``: ``(line_number, fields)`` for every data row, and the index of the
    ``split`` column.

    Mirrors ``pd.read_csv(csv_file, sep=',')`` of the official code: the first line is the header,
    blank lines are ignored. Raises :class:`AVSLayoutError` naming the file (and the row) when the
    ``split`` column is missing, a row's column count differs from the header's, a row has an empty
    name (or category for S4), or a split value is not one of train/val/test.
    """
    rows = read_csv_rows(csv_file)
    header_line, header = rows[0]
    header = [h.strip() for h in header]
    if "split" not in header:
        raise AVSLayoutError(f"{csv_file}: header (line {header_line}) {header} has no 'split' column.")
    if len(header) < _MIN_COLUMNS[task]:
        raise AVSLayoutError(
            f"{csv_file}: header (line {header_line}) has {len(header)} columns; {task} needs at least "
            f"{_MIN_COLUMNS[task]} (name, start, category, split)."
        )
    split_col = header.index("split")
    out = []
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise AVSLayoutError(
                f"{csv_file}: line {line} has {len(row)} columns, the header has {len(header)}: {row}"
            )
        if row[split_col] not in AVS_SPLITS:
            raise AVSLayoutError(
                f"{csv_file}: line {line} has split {row[split_col]!r}, expected one of {AVS_SPLITS}: {row}"
            )
        if not row[0]:
            raise AVSLayoutError(f"{csv_file}: line {line} has an empty video name: {row}")
        if task == "s4" and not row[2]:
            raise AVSLayoutError(f"{csv_file}: line {line} has an empty category: {row}")
        out.append((line, row))
    return out, split_col


def _video_record(paths: Dict[str, str], task: str, split: str, name: str, category: Optional[str]) -> dict:
    """Dataset dict (without height/width) of one video, file names as in the official code."""
    n = AVS_NUM_FRAMES
    if task == "s4":
        frame_dir = os.path.join(paths["frames"], split, category, name)
        mask_dir = os.path.join(paths["masks"], split, category, name)
        audio_rel = os.path.join(split, category, name)
        frames = [os.path.join(frame_dir, f"{name}_{i}.png") for i in range(1, n + 1)]
        # S4 train is semi-supervised: only the first frame carries a mask.
        num_masks = 1 if split == "train" else n
    else:
        frame_dir = os.path.join(paths["frames"], name)
        mask_dir = os.path.join(paths["masks"], split, name)
        audio_rel = os.path.join(split, name)
        frames = [os.path.join(frame_dir, f"{name}.mp4_{i}.png") for i in range(1, n + 1)]
        num_masks = n
    masks: List[Optional[str]] = [
        os.path.join(mask_dir, f"{name}_{i}.png") if i <= num_masks else None for i in range(1, n + 1)
    ]
    return {
        "video_id": name,
        "task": task,
        "split": split,
        "category": category,
        "frame_files": frames,
        "mask_files": masks,
        "audio_logmel_file": os.path.join(paths["logmel"], audio_rel + ".pkl"),
        "audio_wav_file": os.path.join(paths["wav"], audio_rel + ".wav"),
    }


def _missing_error(missing: List[str], what: str) -> FileNotFoundError:
    listed = "\n  ".join(missing[:_MAX_LISTED])
    more = f"\n  ... and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
    return FileNotFoundError(f"{len(missing)} file(s) referenced by {what} do not exist:\n  {listed}{more}")


def _image_size(path: str) -> Tuple[int, int]:
    """(height, width) of an image, reading only its header."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except OSError as e:
        raise OSError(f"Cannot read image {path}: {e}") from e
    return h, w


def load_avs_layout_split(
    root: str, task: str, split: str, *, audio_sources: Sequence[str] = AUDIO_SOURCES
) -> List[dict]:
    """Load one split of an AVSBench-layout dataset (AVSBench itself or SynthAVS) as dataset dicts.

    Args:
        root: folder holding ``Single-source/`` (task "s4") or ``Multi-sources/`` (task "ms3").
        task: "s4" or "ms3".
        split: "train", "val" or "test".
        audio_sources: which audio files must exist: any of "logmel" (.pkl) and "wav".

    Returns:
        list of dicts ``{"video_id", "task", "split", "category" (S4) or None, "frame_files" [T],
        "mask_files" [T paths or None], "audio_logmel_file", "audio_wav_file", "height", "width"}``
        in CSV order. height/width are read from the first frame's header only (AVSClipMapper checks
        that every frame of the clip has that size, naming the odd ones out when they disagree).

    Raises:
        FileNotFoundError: the CSV, or any referenced frame / mask / required audio file, is missing
            (one error listing the first few missing paths and their count).
        AVSLayoutError: malformed CSV (message names the file and the row).
    """
    _check_task(task)
    _check_split(split)
    for src in audio_sources:
        if src not in AUDIO_SOURCES:
            raise ValueError(f"Unknown audio source {src!r}; expected a subset of {AUDIO_SOURCES}.")
    paths = avs_layout_paths(root, task)
    rows, split_col = _read_meta_csv(paths["csv"], task)

    dicts, missing, seen = [], [], {}
    for line, row in rows:
        if row[split_col] != split:
            continue
        name = row[0]
        category = row[2] if task == "s4" else None
        key = (name, category)
        if key in seen:
            raise AVSLayoutError(
                f"{paths['csv']}: line {line} repeats video {name!r} of split {split!r} (first at line {seen[key]})."
            )
        seen[key] = line
        rec = _video_record(paths, task, split, name, category)
        files = rec["frame_files"] + [m for m in rec["mask_files"] if m is not None]
        if "logmel" in audio_sources:
            files.append(rec["audio_logmel_file"])
        if "wav" in audio_sources:
            files.append(rec["audio_wav_file"])
        missing.extend(p for p in files if not os.path.isfile(p))
        dicts.append(rec)
    if missing:
        raise _missing_error(missing, f"{task} split {split!r} of {paths['csv']}")
    for rec in dicts:
        rec["height"], rec["width"] = _image_size(rec["frame_files"][0])
    logger.info("Loaded %d %s videos of split %r from %s", len(dicts), task, split, paths["csv"])
    return dicts


def register_or_replace(name: str, loader, metadata: dict) -> None:
    """Register (or re-register, e.g. with another root) one dataset name.

    A name already registered with the same evaluator_type / task / split as ``metadata`` (by this
    module or register_avss) is replaced, so the trainer can re-register with the config's root after
    the import-time default registration. Any other existing registration under the name is an error.
    """
    if name in DatasetCatalog.list():
        old = MetadataCatalog.get(name)
        ours = all(old.get(key) == metadata[key] for key in ("evaluator_type", "task", "split"))
        if not ours:
            raise ValueError(f"Dataset {name!r} is already registered by someone else; refusing to replace it.")
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(**metadata)


def register_avs_layout(
    name_prefix: str, root: str, task: str, *, audio_sources: Sequence[str] = AUDIO_SOURCES, load_fn=None
) -> List[str]:
    """Register ``{name_prefix}_{task}_{split}`` for split in train/val/test (lazily).

    Args:
        name_prefix: e.g. "avsbench" or "synthavs".
        root: folder holding ``Single-source/`` / ``Multi-sources/`` in the AVSBench layout.
        task: "s4" or "ms3".
        audio_sources: audio files checked at load time ("logmel", "wav").
        load_fn: the split loader, called as ``load_fn(root, task, split, audio_sources=...)``; None:
            :func:`load_avs_layout_split` (a dataset that adds keys to its dicts wraps it).

    Returns:
        the registered dataset names.
    """
    _check_task(task)
    names = []
    for split in AVS_SPLITS:
        name = f"{name_prefix}_{task}_{split}"
        loader = functools.partial(
            load_fn or load_avs_layout_split, root, task, split, audio_sources=tuple(audio_sources)
        )
        register_or_replace(
            name,
            loader,
            {
                "evaluator_type": "avs",
                "task": task,
                "split": split,
                "root": root,
                "csv_file": avs_layout_paths(root, task)["csv"],
                "audio_sources": tuple(audio_sources),
                "num_frames": AVS_NUM_FRAMES,
            },
        )
        names.append(name)
    return names


def register_avsbench_s4(root: str, *, audio_sources: Sequence[str] = AUDIO_SOURCES) -> List[str]:
    """Register avsbench_s4_{train,val,test} from ``root/Single-source``."""
    return register_avs_layout("avsbench", root, "s4", audio_sources=audio_sources)


def register_avsbench_ms3(root: str, *, audio_sources: Sequence[str] = AUDIO_SOURCES) -> List[str]:
    """Register avsbench_ms3_{train,val,test} from ``root/Multi-sources``."""
    return register_avs_layout("avsbench", root, "ms3", audio_sources=audio_sources)


def register_all_avsbench(root: Optional[str] = None, *, audio_sources: Sequence[str] = AUDIO_SOURCES) -> List[str]:
    """Register all six AVSBench splits. ``root`` None: ``$DETECTRON2_DATASETS`` (default "datasets")."""
    if root is None:
        root = get_avs_root()
    return register_avsbench_s4(root, audio_sources=audio_sources) + register_avsbench_ms3(
        root, audio_sources=audio_sources
    )


def read_avs_mask(path: str) -> np.ndarray:
    """Read a ground-truth (or predicted) AVS mask as uint8 ``[H, W]`` in {0, 1}: any non-zero pixel is foreground.

    Palette ('P') images are judged by palette index, as the official MS3 loader (mode 'P') does;
    grey / binary images by value (official S4: mode '1'; identical for AVSBench's binary masks);
    colour images by any non-zero colour channel (alpha ignored).
    """
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("LA", "PA"):
                fg = np.asarray(im)[..., 0] != 0  # [H, W]: grey value / palette index, alpha ignored
            elif mode in ("1", "L", "P", "I", "I;16", "F"):
                fg = np.asarray(im) != 0  # [H, W]
            else:
                rgb = np.asarray(im.convert("RGB"))  # [H, W, 3]
                fg = (rgb != 0).any(axis=-1)  # [H, W]
    except OSError as e:
        raise OSError(f"Cannot read mask {path}: {e}") from e
    if fg.ndim != 2:
        raise ValueError(f"Mask {path} has unexpected shape {fg.shape} (mode {mode}).")
    return fg.astype(np.uint8)


def register_all_avsbench_from_cfg(cfg) -> List[str]:
    """(Re-)register all AVSBench splits with ``cfg.DATASETS.AVS_ROOT`` (see :func:`get_avs_root`),
    checking at load time only the audio files of ``cfg.INPUT.AUDIO.SOURCE`` ("logmel" or "wav")."""
    source = cfg.INPUT.AUDIO.SOURCE
    if source not in AUDIO_SOURCES:
        raise ValueError(f"cfg.INPUT.AUDIO.SOURCE = {source!r}; expected one of {AUDIO_SOURCES}.")
    return register_all_avsbench(get_avs_root(cfg), audio_sources=(source,))
