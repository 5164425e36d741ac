#!/usr/bin/env python
"""Check an AVSBench copy (S4 / MS3, or AVSBench-semantic) and, optionally, write its missing log-mel .pkl files.

Example::

    python datasets/prepare_avsbench.py datasets/                 # both tasks
    python datasets/prepare_avsbench.py /data/AVSBench --task s4 --compute-logmel
    python datasets/prepare_avsbench.py /data/AVSBench_semantic --task avss --compute-logmel

ROOT is the folder holding ``Single-source/`` (S4) and ``Multi-sources/`` (MS3) as received from the
AVSBench authors (layout: datasets/README.md). For every split of the metadata CSV it checks that each
video has its 5 frames, its masks (S4 train: the first frame only), its WAV and its log-mel .pkl;
that frames and masks are 224x224 or at least of one size per video; and that each WAV lasts 5 s.
It prints a summary table and the problems by path (the first --max-list of each kind, then a count),
and exits with status 1 when any problem was found (0 otherwise).

--compute-logmel writes each missing ``audio_log_mel/*.pkl`` from its WAV as AVSBench does:
``pickle.dump`` of a float32 tensor [5, 1, 96, 64] of VGGish log-mel examples (audio shorter than 5 s
is padded by repeating the last example), computed with ``aqformer_d2.audio.logmel``.
Existing .pkl files are read with the restricted unpickler (never executing code) and their shape checked.

--task avss: ROOT is the folder holding AVSBench-semantic's metadata.csv (layout: docs/avss.md). It checks
label2idx.json (--num-classes entries, default 71, background = 0), that every metadata row has its
folder, its T frames (5 for v1s / v1m, 10 for v2), its labels (v1s train: frame 0 only) in palette
colours only, one size per clip, and a readable audio.wav of T seconds. --compute-logmel writes
``<label>/<uid>/audio_log_mel.pkl`` ([T, 1, 96, 64], for INPUT.AUDIO.SOURCE "logmel"), each through a
temporary file renamed into place, so an interrupted run leaves no partial .pkl.
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
import torch
from PIL import Image
from tabulate import tabulate

from aqformer_d2.audio.logmel import wav_file_to_examples
from aqformer_d2.data.datasets.register_avsbench import (
    AVS_NUM_FRAMES,
    AVS_SPLITS,
    AVS_TASKS,
    AVSLayoutError,
    _read_meta_csv,
    _video_record,
    avs_layout_paths,
)
from aqformer_d2.data.datasets.register_avss import (
    AVSS_NUM_CLASSES,
    AVSS_SUBSETS,
    AVSSLayoutError,
    _clip_record,
    _read_metadata,
    avss_palette,
    load_label2idx,
    read_avss_label,
)
from aqformer_d2.utils.safe_pickle import UnsafePickleError, load_pickle_restricted

# AVSBench frames and masks are 224x224; other sizes are reported as notes (consistent per video: usable).
EXPECTED_SIZE = (224, 224)
# Shape of an audio_log_mel .pkl: T VGGish examples of [1, 96, 64].
LOGMEL_SHAPE = (AVS_NUM_FRAMES, 1, 96, 64)
# Audio shorter than this (seconds) is reported.
MIN_AUDIO_SECONDS = 5.0
# Tolerance on the audio duration (a few samples of rounding in the source WAVs).
_DURATION_TOL = 1e-3

# Problem kinds, in report order.
KINDS = OrderedDict(
    [
        ("csv", "unreadable or malformed metadata CSV"),
        ("label2idx", "bad label2idx.json"),
        ("missing_clip", "missing clip files or folders (AVSS)"),
        ("bad_label", "labels with colours outside the palette (AVSS)"),
        ("missing_frame", "missing frames"),
        ("missing_mask", "missing masks"),
        ("missing_wav", "missing audio WAV"),
        ("missing_logmel", "missing audio log-mel .pkl"),
        ("bad_image", "unreadable frames / masks"),
        ("inconsistent_size", "frames / masks of different sizes within a video"),
        ("bad_wav", "unreadable audio WAV"),
        ("short_audio", "audio shorter than 5 s"),
        ("bad_logmel", "log-mel .pkl of the wrong type / shape or unreadable"),
        ("logmel_failed", "log-mel .pkl could not be computed"),
    ]
)


@dataclass
class Issue:
    kind: str
    path: str
    detail: str = ""


@dataclass
class SplitStats:
    task: str
    split: str
    videos: int = 0
    complete: int = 0
    frames: List[int] = field(default_factory=lambda: [0, 0])  # found, expected
    masks: List[int] = field(default_factory=lambda: [0, 0])
    wav: List[int] = field(default_factory=lambda: [0, 0])
    logmel: List[int] = field(default_factory=lambda: [0, 0])
    created: int = 0
    short_audio: int = 0
    size_issues: int = 0
    not_224: int = 0


def _count(pair: List[int], found: bool) -> None:
    pair[1] += 1
    pair[0] += int(found)


def _image_size(path: str) -> Tuple[int, int]:
    """(height, width) from the header; OSError when unreadable."""
    with Image.open(path) as im:
        w, h = im.size
    return h, w


def _check_logmel(path: str, shape: Tuple[int, ...] = LOGMEL_SHAPE) -> Optional[str]:
    """None when the .pkl holds a finite tensor / array of ``shape`` ([T, 1, 96, 64]); otherwise what is wrong."""
    try:
        obj = load_pickle_restricted(path)
    except (UnsafePickleError, pickle.UnpicklingError, OSError) as e:
        return str(e)
    if isinstance(obj, np.ndarray):
        obj = torch.from_numpy(np.ascontiguousarray(obj))
    if not isinstance(obj, torch.Tensor):
        return f"holds a {type(obj).__name__}, expected a tensor {list(shape)}"
    if tuple(obj.shape) != tuple(shape):
        return f"shape {list(obj.shape)}, expected {list(shape)}"
    if not torch.isfinite(obj.float()).all():
        return "holds NaN or infinite values"
    return None


def write_logmel(wav_path: str, pkl_path: str, num_frames: int = AVS_NUM_FRAMES) -> torch.Tensor:
    """Compute the [T, 1, 96, 64] log-mel examples of a WAV and pickle them to ``pkl_path`` (as AVSBench)."""
    examples = wav_file_to_examples(wav_path, num_examples=num_frames).to(torch.float32)
    os.makedirs(os.path.dirname(pkl_path), exist_ok=True)
    tmp = pkl_path + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(examples, f)
    os.replace(tmp, pkl_path)
    return examples


def check_video(
    rec: dict, stats: SplitStats, issues: List[Issue], notes: List[Issue], compute_logmel: bool, min_audio: float
) -> None:
    """Check one video's files (dataset dict from the registration's ``_video_record``)."""
    before = len(issues)
    sizes: Dict[str, Tuple[int, int]] = {}
    for path in rec["frame_files"]:
        found = os.path.isfile(path)
        _count(stats.frames, found)
        if not found:
            issues.append(Issue("missing_frame", path))
    for path in rec["mask_files"]:
        if path is None:
            continue
        found = os.path.isfile(path)
        _count(stats.masks, found)
        if not found:
            issues.append(Issue("missing_mask", path))
    for path in rec["frame_files"] + [m for m in rec["mask_files"] if m is not None]:
        if os.path.isfile(path):
            try:
                sizes[path] = _image_size(path)
            except OSError as e:
                issues.append(Issue("bad_image", path, str(e)))
    distinct = sorted(set(sizes.values()))
    if len(distinct) > 1:
        stats.size_issues += 1
        masks = {m for m in rec["mask_files"] if m is not None}
        groups = []
        for h, w in distinct:
            names = [
                ("mask " if p in masks else "frame ") + os.path.basename(p) for p, hw in sizes.items() if hw == (h, w)
            ]
            groups.append(f"{w}x{h}: {', '.join(names)}")
        listed = "; ".join(groups)
        issues.append(Issue("inconsistent_size", os.path.dirname(rec["frame_files"][0]), listed))
    elif distinct and distinct[0] != EXPECTED_SIZE:
        stats.not_224 += 1
        h, w = distinct[0]
        notes.append(Issue("not_224", os.path.dirname(rec["frame_files"][0]), f"{w}x{h} (AVSBench: 224x224)"))

    wav, pkl = rec["audio_wav_file"], rec["audio_logmel_file"]
    wav_ok = os.path.isfile(wav)
    _count(stats.wav, wav_ok)
    if not wav_ok:
        issues.append(Issue("missing_wav", wav))
    else:
        try:
            info = sf.info(wav)
        except (sf.SoundFileError, RuntimeError) as e:
            issues.append(Issue("bad_wav", wav, str(e)))
            wav_ok = False
        else:
            if info.duration < min_audio - _DURATION_TOL:
                stats.short_audio += 1
                issues.append(Issue("short_audio", wav, f"{info.duration:.3f} s < {min_audio:g} s"))

    pkl_ok = os.path.isfile(pkl)
    if not pkl_ok and compute_logmel and wav_ok:
        try:
            write_logmel(wav, pkl)
        except ValueError as e:
            issues.append(Issue("logmel_failed", pkl, str(e)))
        else:
            stats.created += 1
            pkl_ok = True
    elif pkl_ok:
        error = _check_logmel(pkl)
        if error is not None:
            issues.append(Issue("bad_logmel", pkl, error))
    _count(stats.logmel, pkl_ok)
    if not pkl_ok and not (compute_logmel and wav_ok):
        hint = "no readable WAV to compute it from" if compute_logmel else "--compute-logmel writes it from the WAV"
        issues.append(Issue("missing_logmel", pkl, hint))
    if len(issues) == before:
        stats.complete += 1


def check_task(
    root: str, task: str, compute_logmel: bool = False, min_audio: float = MIN_AUDIO_SECONDS
) -> Tuple[List[SplitStats], List[Issue], List[Issue]]:
    """Check every split of one task. Returns (per-split stats, problems, notes)."""
    paths = avs_layout_paths(root, task)
    issues: List[Issue] = []
    notes: List[Issue] = []
    try:
        rows, split_col = _read_meta_csv(paths["csv"], task)
    except (FileNotFoundError, AVSLayoutError) as e:
        return [], [Issue("csv", paths["csv"], str(e))], notes
    stats = {split: SplitStats(task, split) for split in AVS_SPLITS}
    seen: Dict[Tuple[str, str, Optional[str]], int] = {}
    for line, row in rows:
        split, name = row[split_col], row[0]
        category = row[2] if task == "s4" else None
        key = (split, name, category)
        if key in seen:
            issues.append(Issue("csv", paths["csv"], f"line {line} repeats video {name!r} (first at line {seen[key]})"))
            continue
        seen[key] = line
        stats[split].videos += 1
        rec = _video_record(paths, task, split, name, category)
        check_video(rec, stats[split], issues, notes, compute_logmel, min_audio)
    return list(stats.values()), issues, notes


def _check_avss_clip(rec: dict, palette: np.ndarray, stats: SplitStats, issues: List[Issue], compute_logmel: bool) -> None:
    """Check one AVSS clip whose folder and files exist (dataset dict of register_avss._clip_record)."""
    before = len(issues)
    n = rec["num_frames"]
    sizes: Dict[str, Tuple[int, int]] = {}
    for path in rec["frame_files"]:
        try:
            sizes[path] = _image_size(path)
        except OSError as e:
            issues.append(Issue("bad_image", path, str(e)))
    for path in [p for p in rec["label_files"] if p is not None]:
        try:
            label = read_avss_label(path, palette)
        except AVSSLayoutError as e:
            issues.append(Issue("bad_label", path, str(e).split(": ", 1)[1]))
        except OSError as e:
            issues.append(Issue("bad_image", path, str(e)))
        else:
            sizes[path] = label.shape
    if len(set(sizes.values())) > 1:
        stats.size_issues += 1
        listed = "; ".join(f"{os.path.relpath(p, os.path.dirname(os.path.dirname(p)))} {w}x{h}"
                           for p, (h, w) in sizes.items())
        issues.append(Issue("inconsistent_size", os.path.dirname(os.path.dirname(rec["frame_files"][0])), listed))
    wav, pkl = rec["audio_wav_file"], os.path.join(os.path.dirname(rec["audio_wav_file"]), "audio_log_mel.pkl")
    existed = os.path.isfile(pkl)
    try:
        info = sf.info(wav)
    except (sf.SoundFileError, RuntimeError) as e:
        issues.append(Issue("bad_wav", wav, str(e)))
    else:
        if info.duration < n - _DURATION_TOL:
            stats.short_audio += 1
            issues.append(Issue("short_audio", wav, f"{info.duration:.3f} s < {n} s ({rec['subset']})"))
        elif compute_logmel and not existed:
            try:
                write_logmel(wav, pkl, n)
                stats.created += 1
            except ValueError as e:
                issues.append(Issue("logmel_failed", pkl, str(e)))
    if existed:
        error = _check_logmel(pkl, (n, 1, 96, 64))
        if error is not None:
            issues.append(Issue("bad_logmel", pkl, error))
    _count(stats.logmel, os.path.isfile(pkl))
    if len(issues) == before:
        stats.complete += 1


def check_avss(
    root: str, compute_logmel: bool = False, num_classes: int = AVSS_NUM_CLASSES
) -> Tuple[List[SplitStats], List[Issue], List[Issue]]:
    """Check an AVSBench-semantic tree (``root`` holds metadata.csv). Returns (stats per split and subset,
    problems, notes)."""
    csv_file = os.path.join(root, "metadata.csv")
    try:
        rows = _read_metadata(csv_file)
    except (FileNotFoundError, AVSSLayoutError) as e:
        return [], [Issue("csv", csv_file, str(e))], []
    label2idx = os.path.join(root, "label2idx.json")
    try:
        load_label2idx(label2idx, num_classes)
    except AVSSLayoutError as e:
        return [], [Issue("label2idx", label2idx, str(e).split(": ", 1)[1])], []
    palette = avss_palette(num_classes)
    stats = {(split, subset): SplitStats(f"avss/{subset}", split) for split in AVS_SPLITS for subset in AVSS_SUBSETS}
    issues: List[Issue] = []
    for _, row in rows:
        st = stats[(row["split"], row["label"])]
        st.videos += 1
        rec, problems = _clip_record(root, row, "wav")
        if rec:
            for p in rec["frame_files"]:
                _count(st.frames, os.path.isfile(p))
            for p in [q for q in rec["label_files"] if q is not None]:
                _count(st.masks, os.path.isfile(p))
            _count(st.wav, os.path.isfile(rec["audio_wav_file"]))
        issues += [Issue("missing_clip", *p.split(": ", 1)) for p in problems]
        if rec and not problems:
            _check_avss_clip(rec, palette, st, issues, compute_logmel)
    return [s for s in stats.values() if s.videos], issues, []


def _frac(pair: Sequence[int]) -> str:
    return f"{pair[0]}/{pair[1]}"


def format_report(
    root: str, stats: List[SplitStats], issues: List[Issue], notes: List[Issue], max_list: int, compute_logmel: bool
) -> str:
    """The readable report: summary table, problems by kind and path, notes."""
    headers = ["task", "split", "videos (CSV)", "complete", "frames", "masks", "wav", "log-mel .pkl", "short audio",
               "size issues"]
    if compute_logmel:
        headers.append("pkl written")
    table = []
    for s in stats:
        row = [s.task, s.split, s.videos, s.complete, _frac(s.frames), _frac(s.masks), _frac(s.wav),
               _frac(s.logmel), s.short_audio, s.size_issues]
        if compute_logmel:
            row.append(s.created)
        table.append(row)
    lines = [f"AVSBench check of {os.path.abspath(root)}", ""]
    if table:
        lines += [tabulate(table, headers=headers, tablefmt="github"), ""]
    if not issues:
        lines.append("No problems found.")
    else:
        lines.append(f"{len(issues)} problem(s):")
        for kind, title in KINDS.items():
            of_kind = [i for i in issues if i.kind == kind]
            if not of_kind:
                continue
            lines.append(f"  {title} ({len(of_kind)}):")
            for issue in of_kind[:max_list]:
                lines.append(f"    {issue.path}" + (f": {issue.detail}" if issue.detail else ""))
            if len(of_kind) > max_list:
                lines.append(f"    ... and {len(of_kind) - max_list} more")
    if notes:
        lines += ["", f"Note: {len(notes)} video(s) have frames and masks of one size other than 224x224 "
                      "(usable: frames are resized to INPUT.IMAGE_SIZE):"]
        by_size: Dict[str, List[str]] = OrderedDict()
        for n in notes:
            by_size.setdefault(n.detail, []).append(n.path)
        for size, paths in by_size.items():
            lines.append(f"  {size}: {len(paths)} video(s)")
            lines += [f"    {p}" for p in paths[:max_list]]
            if len(paths) > max_list:
                lines.append(f"    ... and {len(paths) - max_list} more")
    return "\n".join(lines)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from e
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="folder holding Single-source/ and/or Multi-sources/ (--task avss: metadata.csv)")
    parser.add_argument("--task", choices=AVS_TASKS + ("both", "avss"), default="both",
                        help="s4, ms3, both (S4 and MS3), or avss (AVSBench-semantic)")
    parser.add_argument("--num-classes", type=_positive_int, default=AVSS_NUM_CLASSES,
                        help="--task avss: classes label2idx.json must have (default 71; SynthAVS-semantic: 9)")
    parser.add_argument("--compute-logmel", action="store_true", help="write missing audio_log_mel .pkl files")
    parser.add_argument("--max-list", type=_positive_int, default=20, help="paths listed per kind of problem")
    parser.add_argument("--min-audio-seconds", type=float, default=MIN_AUDIO_SECONDS,
                        help="report audio shorter than this (default: 5)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Check ROOT, print the report; returns the exit status (1 when problems were found)."""
    args = build_parser().parse_args(argv)
    if not os.path.isdir(args.root):
        print(f"error: {args.root}: not a directory", file=sys.stderr)
        return 2
    tasks = AVS_TASKS if args.task == "both" else (args.task,)
    stats, issues, notes = [], [], []
    if args.task == "avss":
        stats, issues, notes = check_avss(args.root, args.compute_logmel, args.num_classes)
        tasks = ()
    for task in tasks:
        s, i, n = check_task(args.root, task, args.compute_logmel, args.min_audio_seconds)
        stats += s
        issues += i
        notes += n
    print(format_report(args.root, stats, issues, notes, args.max_list, args.compute_logmel))
    return 1 if issues else 0


if __name__ == "__main__":
    sys.exit(main())
