#!/usr/bin/env python
"""AQFormer demo: segment the sounding objects of a video (or of a folder of frames plus an audio file).

Examples::

    python demo/demo.py --config-file configs/avsbench/... --input video.mp4 --output out/ \\
        --opts MODEL.WEIGHTS model_final.pth
    python demo/demo.py --config-file ... --input frames_dir/ --audio sound.wav --output out/ --opts MODEL.WEIGHTS ...
    python tools/export_onnx.py --config-file configs/avsbench/... --output model.onnx MODEL.WEIGHTS model_final.pth
    python demo/demo.py --config-file configs/avsbench/... --input video.mp4 --output out/ \
        --backend onnxruntime --onnx model.onnx

Backends: ``torch`` (default) runs the model of --config-file / MODEL.WEIGHTS eagerly; ``onnxruntime``
runs an ONNX file written by tools/export_onnx.py on the CPU. The config still sets the clip length
T and the frame size, and the ONNX file must have been exported for the same T and size (checked).
Both backends compute the probabilities at INPUT.IMAGE_SIZE; they are resized bilinearly to the
frame size and thresholded at MODEL.AQFORMER.MASK_THRESHOLD (aqformer_d2.inference.outputs).

Models: S4 / MS3 configs (meta-arch AQFormer) give one "sounding object" mask per frame; AVSS configs
(meta-arch AQFormerSemantic, e.g. configs/avsbench/avss/aqformer_R50.yaml) give a class per pixel (argmax of
the per-class scores resized to the frame size), coloured with the dataset's palette ("stuff_colors" of
DATASETS.TEST[0]; background not tinted) and named from its "stuff_classes", or from --label2idx FILE (the
dataset's label2idx.json, needed when the dataset itself is not on this machine). AVSS runs on the torch
backend only (no ONNX export of the semantic head).

No sounding object: a frame where the model predicts no pixel of a sounding object (S4 / MS3: no pixel above
MASK_THRESHOLD; AVSS: background everywhere) says "no sounding object" in the overlay and is flagged in
summary.json. --mute replaces the soundtrack by silence (zeros through the log-mel front end, the "silence"
negative of docs/listening.md) to see what the model draws when nothing sounds: a model trained as the paper
trains draws masks on visually salient objects anyway; one trained with negative audio (INPUT.NEGATIVE_AUDIO)
stays silent on silence and noise (docs/listening.md). --min-area A applies the minimum-area rule of
docs/listening.md: a frame whose mask covers at most A of the frame (a share, e.g. 0.002) is emptied and
flagged; off-screen sounds leave mostly such specks (docs/listening.md). Default 0: any pixel counts.

Frames: one frame per second, as AVSBench. By default the LAST frame of each second (the frame
AVSBench annotates for each one-second clip) is used; ``--frame-position first|middle`` changes that.
With a folder of frames, every image (natural file-name order) is one second.
Audio: decoded with PyAV from any container, averaged to mono and resampled to 16 kHz; each second
gives one 0.96 s VGGish log-mel example. A clip is T = MODEL.AQFORMER.NUM_FRAMES seconds; a last
clip with fewer seconds is padded by repeating its last frame and last audio example (AVSBench pads
audio the same way) and the padded frames' masks are dropped.

Reading the input and the clip loop are the package's (``aqformer_d2.inference``: ``load_video`` /
``load_frame_files``, ``predict_video``); this script is the command line and writes the outputs.

Outputs in --output:
    overlay.mp4   the masks blended over the ORIGINAL frames at the original frame rate (the mask of
                  second s on every frame of that second; 50 % frame + 50 % class colour), a legend of the
                  classes on screen and "no sounding object" where none is predicted, H.264, with the
                  original audio as AAC (no audio track with --mute)
    masks/        one palette PNG per sampled frame at the video size, clipCCCC_secSSSSS.png: pixel value =
                  label (0 background; S4 / MS3: 1 sounding object; AVSS: class index), palette = legend colours
    summary.json  input, config, weights, device, fps, duration, legend, clips (seconds, padding, per frame:
                  foreground fraction, class areas by name, no-sounding-object flag, mask files), and the
                  seconds without a sounding object
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import time
from typing import Iterator, List, Optional

import cv2
import numpy as np
import torch
import tqdm
from PIL import Image

from aqformer_d2.audio.video import FRAME_POSITIONS, iter_video_frames, write_video
from aqformer_d2.data.datasets.register_avss import load_label2idx
from aqformer_d2.engine import build_cfg
from aqformer_d2.evaluation import drop_small_masks
from aqformer_d2.utils.visualize import overlay_classes
from aqformer_d2.inference import (
    BACKENDS,
    ClipOutput,
    Legend,
    VideoInput,
    build_segmenter,
    list_frame_folder,
    load_frame_files,
    load_video,
    muted,
    plan_clips,
    predict_video,
    read_rgb,
)
from detectron2.data import MetadataCatalog
from detectron2.utils.logger import setup_logger

LOGGER_NAME = "aqformer_demo"
NO_SOUNDING_OBJECT = "no sounding object"
_TIME_EPS = 1e-6


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to the config file")
    parser.add_argument(
        "--input",
        required=True,
        help="a video file (any container PyAV reads), or a folder of frames (one per second; needs --audio)",
    )
    parser.add_argument(
        "--audio",
        default=None,
        help="audio file (WAV or any container with sound); required with a frames folder, "
        "replaces the video's own sound track otherwise",
    )
    parser.add_argument("--output", required=True, help="output folder (created if needed)")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="torch: PyTorch eager (default); onnxruntime: the --onnx file with ONNX Runtime on the CPU",
    )
    parser.add_argument(
        "--onnx",
        default=None,
        metavar="FILE",
        help="ONNX model written by tools/export_onnx.py (required with --backend onnxruntime)",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="cpu or cuda[:N] (default: cuda when available for --backend torch; onnxruntime runs on the cpu)",
    )
    parser.add_argument(
        "--frame-position",
        choices=FRAME_POSITIONS,
        default="last",
        help="which frame of each second is segmented (default: last, as AVSBench)",
    )
    parser.add_argument(
        "--mute",
        action="store_true",
        help="replace the soundtrack by silence (zeros through the log-mel front end) to see what the model "
        "predicts when nothing sounds; the overlay then has no audio track",
    )
    parser.add_argument(
        "--min-area",
        type=float,
        default=0.0,
        metavar="A",
        help="minimum-area rule: a frame whose mask covers at most this share of the frame (e.g. 0.002) is "
        "emptied and flagged 'no sounding object' (default 0: any pixel counts; docs/listening.md)",
    )
    parser.add_argument(
        "--label2idx",
        default=None,
        metavar="FILE",
        help="AVSS models: the class names (a label2idx.json, {name: index}); default: those of DATASETS.TEST[0]",
    )
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    parser.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        help="modify config options using the command-line 'KEY VALUE' pairs",
    )
    return parser


def setup_cfg(args):
    if len(args.opts) % 2:
        raise ValueError(f"--opts needs KEY VALUE pairs, got an odd number of items: {args.opts}")
    # build_cfg imports the config's IMPORTS (the user's components) before anything is built
    cfg = build_cfg(args.config_file, list(args.opts) + ["MODEL.DEVICE", args.device])
    if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
        raise ValueError(f"{args.config_file}: INPUT.FORMAT = {cfg.INPUT.FORMAT!r}; the demo supports 'RGB' and 'BGR'")
    return cfg


def _resolve_device(args) -> str:
    """--device, or its default for the backend; ONNX Runtime (the CPU package) runs on the CPU only."""
    if args.backend == "onnxruntime":
        if args.onnx is None:
            raise ValueError("--backend onnxruntime needs --onnx FILE (tools/export_onnx.py writes one)")
        if args.device not in (None, "cpu"):
            raise ValueError(f"--device {args.device}: --backend onnxruntime runs on the cpu")
        return "cpu"
    if args.onnx is not None:
        raise ValueError(f"--onnx {args.onnx} is only used with --backend onnxruntime")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    _check_device(device)
    return device


def _check_device(device: str) -> None:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {device}: expected cpu or cuda[:N]")


def _legend(cfg, args, output: ClipOutput) -> Legend:
    """Names and colours of the label values: the output kind's, from DATASETS.TEST[0]'s metadata (AVSS:
    "stuff_colors", and "stuff_classes" or its label2idx.json) or --label2idx."""
    meta = MetadataCatalog.get(cfg.DATASETS.TEST[0]) if len(cfg.DATASETS.TEST) else None
    path = args.label2idx
    if path is None and meta is not None and meta.get("stuff_classes") is None:
        path = meta.get("label2idx_file")
        path = path if path and os.path.isfile(path) else None
    names = load_label2idx(path, output.num_classes) if path else None
    return output.legend(meta, names)


def _text(img: np.ndarray, text: str, org, scale: float, thickness: int) -> None:
    """White text with a black outline (readable on any frame)."""
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def _draw_legend(img: np.ndarray, legend: Legend, present: List[int]) -> np.ndarray:
    """Draw, top left, a colour swatch and the name of each class in ``present`` (label values, background
    excluded), or "no sounding object" when there is none. ``img`` RGB uint8 [H, W, 3], changed in place."""
    height = img.shape[0]
    scale = max(0.35, height / 720.0 * 0.8)
    thickness = max(1, int(round(scale * 2)))
    line = int(round(30 * scale / 0.8))
    pad = max(4, line // 4)
    if not present:
        _text(img, NO_SOUNDING_OBJECT, (pad, pad + line - line // 4), scale, thickness)
        return img
    for row, k in enumerate(present):
        y = pad + row * line
        color = tuple(int(c) for c in legend.colors[k])
        cv2.rectangle(img, (pad, y + 2), (pad + line - 4, y + line - 4), color, -1)
        cv2.rectangle(img, (pad, y + 2), (pad + line - 4, y + line - 4), (255, 255, 255), 1)
        _text(img, legend.names[k], (pad + line + 2, y + line - line // 4), scale, thickness)
    return img


def _render(rgb: np.ndarray, labels: np.ndarray, legend: Legend) -> np.ndarray:
    """One overlay frame: labels blended over the frame, and the legend of the classes on screen."""
    present = [int(k) for k in np.unique(labels) if k > 0]
    return _draw_legend(overlay_classes(rgb, labels, legend.colors), legend, present)


def _class_areas(labels: np.ndarray, legend: Legend) -> dict:
    """Fraction of the frame per class name (classes present only, background included; sums to 1)."""
    counts = np.bincount(labels.ravel(), minlength=len(legend.names))
    return {legend.names[k]: round(float(c) / labels.size, 6) for k, c in enumerate(counts) if c}


def _save_labels(labels: np.ndarray, legend: Legend, path: str) -> None:
    """A palette PNG: pixel value = label, palette = the legend's colours."""
    im = Image.frombytes("P", (labels.shape[1], labels.shape[0]), np.ascontiguousarray(labels).tobytes())
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(legend.colors)] = legend.colors
    im.putpalette(palette.ravel().tolist())
    im.save(path)


class _MaskBySecond:
    """Labels uint8 [H, W] of second s, read back from its PNG (one cached at a time: frames arrive in time order)."""

    def __init__(self, mask_paths: List[str]):
        self.paths = mask_paths
        self._sec = None
        self._mask = None

    def __call__(self, sec: int) -> np.ndarray:
        sec = min(max(sec, 0), len(self.paths) - 1)
        if sec != self._sec:
            with Image.open(self.paths[sec]) as im:
                self._mask = np.asarray(im)
            self._sec = sec
        return self._mask


def _load_inputs(args, segmenter, logger: logging.Logger) -> VideoInput:
    """--input (a video, or a folder of frames with --audio) sampled at one frame per second."""
    if os.path.isdir(args.input):
        if args.audio is None:
            raise ValueError(f"{args.input}: a frames folder needs an audio file (--audio)")
        return load_frame_files(list_frame_folder(args.input), args.audio, segmenter)
    if not os.path.isfile(args.input):
        raise FileNotFoundError(f"{args.input}: input video / frames folder not found")
    video = load_video(args.input, segmenter, args.frame_position, args.audio)
    if video.repeated_seconds:
        logger.warning("seconds %s hold no frame of their own; they repeat the frame on screen",
                       list(video.repeated_seconds))
    return video


def _overlay_frames(args, data: VideoInput, masks: _MaskBySecond, legend: Legend) -> Iterator[np.ndarray]:
    if data.input_type == "frames":
        for sec, path in enumerate(data.frame_files):
            yield _render(read_rgb(path), masks(sec), legend)
    else:
        for t, rgb in iter_video_frames(args.input):
            yield _render(rgb, masks(int(math.floor(t + _TIME_EPS))), legend)


def main(argv: Optional[List[str]] = None) -> dict:
    """Run the demo; returns the summary written to ``summary.json``."""
    parser = get_parser()
    args = parser.parse_args(argv)
    if not 0.0 <= args.min_area < 1.0:
        parser.error(f"--min-area must be a share of the frame in [0, 1), got {args.min_area}")
    logger = setup_logger(name=LOGGER_NAME)
    setup_logger(name="aqformer_d2")
    args.device = _resolve_device(args)
    cfg = setup_cfg(args)
    start_time = time.perf_counter()

    segmenter = build_segmenter(cfg, args.backend, args.onnx)
    num_frames = segmenter.num_frames
    threshold = float(cfg.MODEL.AQFORMER.MASK_THRESHOLD)
    legend = _legend(cfg, args, segmenter.output)
    data = _load_inputs(args, segmenter, logger)
    if args.mute:
        data = muted(data)
        logger.info("--mute: the soundtrack is replaced by %.2f s of silence", data.audio_seconds)
    num_seconds = data.num_seconds
    plans = plan_clips(num_seconds, num_frames)  # the clips predict_video runs, for the log and the progress bar
    audio_seconds = data.audio_seconds
    logger.info(
        "%s: %dx%d, %.3f fps, %.2f s, %d sampled frames -> %d clip(s) of %d s; audio %.2f s from %s",
        args.input, data.width, data.height, float(data.fps), data.duration, num_seconds,
        len(plans), num_frames, audio_seconds, data.audio_path,
    )
    if audio_seconds + 1.0 < num_seconds:
        logger.warning("the audio (%.2f s) ends before the video (%d s); missing seconds repeat the last example",
                       audio_seconds, num_seconds)
    if plans[-1].padded:
        logger.info(
            "the last clip covers %d second(s): padded to %d by repeating its last frame and its last audio "
            "example (as AVSBench pads audio); the padded frames get no mask",
            len(plans[-1].seconds), num_frames,
        )

    mask_dir = os.path.join(args.output, "masks")
    os.makedirs(mask_dir, exist_ok=True)
    mask_paths: List[str] = [""] * num_seconds
    clip_records, silent_seconds = [], []
    predictions = predict_video(segmenter, data, threshold)
    for pred in tqdm.tqdm(predictions, total=len(plans), desc="AQFormer clips", unit="clip", disable=args.no_progress):
        if args.min_area:
            pred = dataclasses.replace(pred, labels=drop_small_masks(pred.labels, args.min_area))  # [n, height, width]
        plan = pred.plan
        fg_fraction, areas, names = [], [], []
        no_sound = [not s for s in pred.sounding()]
        for i, sec in enumerate(plan.seconds):
            labels = pred.labels[i]  # [height, width]
            name = f"clip{plan.index:04d}_sec{sec:05d}.png"
            _save_labels(labels, legend, os.path.join(mask_dir, name))
            mask_paths[sec] = os.path.join(mask_dir, name)
            fg_fraction.append(round(float((labels > 0).mean()), 6))
            areas.append(_class_areas(labels, legend))
            names.append(os.path.join("masks", name))
        silent_seconds += [sec for sec, flag in zip(plan.seconds, no_sound) if flag]
        clip_records.append(
            {
                "index": plan.index,
                "seconds": plan.seconds,
                "time_range": [float(plan.seconds[0]), float(min(plan.seconds[-1] + 1, data.duration))],
                "frame_times": [data.times[s] for s in plan.seconds],
                "padded": plan.padded,
                "num_padded_frames": plan.num_padded,
                "num_audio_examples": pred.num_audio_examples,
                "num_padded_audio_examples": num_frames - pred.num_audio_examples,
                "foreground_fraction": fg_fraction,
                "class_areas": areas,
                "no_sounding_object": no_sound,
                "mask_files": names,
            }
        )

    if args.backend == "onnxruntime":
        weights = segmenter.metadata.get("weights", "")
        weights_note = f"exported into {args.onnx} (MODEL.WEIGHTS when it was exported)"
    else:
        weights = cfg.MODEL.WEIGHTS
        weights_note = "loaded" if weights else "MODEL.WEIGHTS empty: random initialisation"
    overlay_path = os.path.join(args.output, "overlay.mp4")
    overlay = write_video(
        overlay_path,
        _overlay_frames(args, data, _MaskBySecond(mask_paths), legend),
        data.width,
        data.height,
        data.fps,
        audio_path=None if data.audio_muted else data.audio_path,
        audio_origin=data.audio_origin,
    )
    summary = {
        "input": os.path.abspath(args.input),
        "input_type": data.input_type,
        "audio": os.path.abspath(data.audio_path),
        "audio_muted": data.audio_muted,
        "config_file": os.path.abspath(args.config_file),
        "opts": list(args.opts),
        "weights": weights or None,
        "weights_note": weights_note,
        "backend": args.backend,
        "onnx": os.path.abspath(args.onnx) if args.onnx else None,
        "device": args.device,
        "width": data.width,
        "height": data.height,
        "fps": float(data.fps),
        "fps_fraction": str(data.fps),
        "duration": round(float(data.duration), 6),
        "num_video_frames": data.num_video_frames,
        "audio_duration": round(audio_seconds, 6),
        "frame_sampling": data.frame_sampling,
        "clip_length": num_frames,
        "image_size": segmenter.height,
        "output_kind": segmenter.output.name,
        "mask_threshold": threshold,
        "min_area": args.min_area,
        "legend": [{"label": k, "name": n, "color": [int(c) for c in legend.colors[k]]}
                   for k, n in enumerate(legend.names)],
        "no_sounding_object": "a frame where the model predicts no pixel of a sounding object (sound_probs: none "
        "above mask_threshold; class_scores: background everywhere), or where its mask covers at most min_area "
        "of the frame (then emptied)",
        "seconds_without_sounding_object": silent_seconds,
        "num_frames_without_sounding_object": len(silent_seconds),
        "num_sampled_frames": num_seconds,
        "num_clips": len(plans),
        "num_padded_clips": sum(p.padded for p in plans),
        "padding": "a last clip shorter than clip_length seconds is padded by repeating its last frame and "
        "its last audio example (AVSBench pads audio by repeating the last log-mel example); "
        "padded frames get no mask",
        "output_dir": os.path.abspath(args.output),
        "outputs": {"overlay_video": "overlay.mp4", "masks_dir": "masks", "summary": "summary.json"},
        "overlay": overlay,
        "clips": clip_records,
        "runtime_s": round(time.perf_counter() - start_time, 3),
    }
    with open(os.path.join(args.output, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    logger.info("%d of %d sampled frames have no sounding object%s", len(silent_seconds), num_seconds,
                " (audio muted)" if data.audio_muted else "")
    logger.info("wrote %s, %d mask PNGs and summary.json to %s", overlay_path, num_seconds, args.output)
    return summary


if __name__ == "__main__":
    try:
        result = main()
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(
        f"{result['num_clips']} clip(s), {result['num_sampled_frames']} masks "
        f"({result['num_frames_without_sounding_object']} without a sounding object), "
        f"{result['outputs']['overlay_video']} and summary.json in {result['output_dir']} ({result['runtime_s']} s)"
    )
