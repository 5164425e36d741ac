"""Clip planning and clip-level pre-processing of a video for AQFormer inference (demo, benchmarks).

A video is cut into clips of T = ``MODEL.AQFORMER.NUM_FRAMES`` consecutive seconds (one frame and one
0.96 s VGGish log-mel example per second, as AVSBench). A last clip with fewer than T seconds is
padded by repeating its last frame and its last audio example (AVSBench pads a clip's audio by
repeating the last example); the padded frames' outputs are dropped by the caller.

Nothing here depends on the model or on the backend that runs it (:mod:`.segmenter`).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from ..audio.logmel import waveform_to_examples

__all__ = [
    "ClipInputShapes",
    "ClipPlan",
    "IMAGE_EXTENSIONS",
    "INPUT_FORMATS",
    "plan_clips",
    "resize_frame",
    "clip_frames",
    "clip_audio",
    "resize_probs",
    "list_frame_folder",
    "read_rgb",
]

class ClipInputShapes:
    """The input shapes of a clip segmenter fixed to ``num_frames`` frames of ``height`` x ``width`` (a mixin:
    the class sets those three attributes): frames ``[T, 3, H, W]``, audio ``[T, 1, 96, 64]`` (one VGGish
    log-mel example per frame)."""

    num_frames: int
    height: int
    width: int

    @property
    def frames_shape(self) -> Tuple[int, int, int, int]:
        return (self.num_frames, 3, self.height, self.width)

    @property
    def audio_shape(self) -> Tuple[int, int, int, int]:
        return (self.num_frames, 1, 96, 64)


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# Channel orders the clip pre-processing can produce (cfg.INPUT.FORMAT).
INPUT_FORMATS = ("RGB", "BGR")
# Samples at 16 kHz needed for one VGGish example: a 400-sample window + 95 hops of 160 (0.975 s).
_MIN_EXAMPLE_SAMPLES = 400 + 95 * 160


@dataclass
class ClipPlan:
    """Clip ``index`` covers the seconds ``seconds`` (consecutive); ``num_padded`` frames are padding."""

    index: int
    seconds: List[int]
    num_padded: int

    @property
    def padded(self) -> bool:
        return self.num_padded > 0


def plan_clips(num_seconds: int, num_frames: int) -> List[ClipPlan]:
    """Cut seconds 0..num_seconds-1 into clips of ``num_frames`` (T); the last one may be padded."""
    if num_seconds < 1:
        raise ValueError(f"nothing to segment: {num_seconds} sampled seconds")
    if num_frames < 1:
        raise ValueError(f"clips need at least one frame, got T = {num_frames}")
    plans = []
    for index, start in enumerate(range(0, num_seconds, num_frames)):
        seconds = list(range(start, min(start + num_frames, num_seconds)))
        plans.append(ClipPlan(index=index, seconds=seconds, num_padded=num_frames - len(seconds)))
    return plans


def resize_frame(rgb: np.ndarray, height: int, width: int, input_format: str = "RGB") -> np.ndarray:
    """RGB uint8 ``[h, w, 3]`` -> uint8 ``[3, height, width]`` in ``input_format`` channel order.

    Bilinear resize with PIL, as the dataset mapper's ``Resize`` does at test time.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 [H, W, 3] frame, got {list(rgb.shape)} {rgb.dtype}")
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input format {input_format!r}: the clip pre-processing supports {INPUT_FORMATS}")
    out = np.asarray(Image.fromarray(rgb).resize((width, height), Image.BILINEAR))  # [height, width, 3] RGB
    if input_format == "BGR":
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out.transpose(2, 0, 1))  # [3, height, width]


def clip_frames(frames: Sequence[np.ndarray], plan: ClipPlan) -> torch.Tensor:
    """uint8 ``[T, 3, H, W]`` of a clip from the pre-processed frames ``[3, H, W]`` of all seconds; the last
    real frame is repeated for padding."""
    real = [frames[s] for s in plan.seconds]
    return torch.from_numpy(np.stack(real + [real[-1]] * plan.num_padded))  # [T, 3, H, W]


def clip_audio(waveform: np.ndarray, sample_rate: int, plan: ClipPlan) -> Tuple[torch.Tensor, int]:
    """VGGish examples ``[T, 1, 96, 64]`` of a clip (T = real + padded seconds of ``plan``), and how many of
    them come from the audio.

    The audio of the clip's real seconds ``[s0, s0 + n)`` gives floor examples of 0.96 s (at most n,
    AVSBench's convention for a 5 s clip); the last one is repeated up to T. A segment shorter than
    one example (0.975 s: a short last second, or audio that ends before the video) is extended
    backwards to the last 0.975 s of audio available up to its end.

    Raises:
        ValueError: the whole audio is shorter than one example.
    """
    num_frames = len(plan.seconds) + plan.num_padded
    n_audio = waveform.shape[-1]
    start = plan.seconds[0] * sample_rate
    end = min((plan.seconds[-1] + 1) * sample_rate, n_audio)
    min_samples = int(np.ceil(_MIN_EXAMPLE_SAMPLES * sample_rate / 16000))
    if end - start < min_samples:
        end = min(max(end, min_samples), n_audio)
        start = max(0, end - min_samples)
    if end - start < min_samples:
        raise ValueError(f"audio of {n_audio / sample_rate:.3f} s is shorter than one VGGish example (0.975 s)")
    examples = waveform_to_examples(waveform[start:end], sample_rate)  # [k, 1, 96, 64]
    k = min(examples.shape[0], len(plan.seconds), num_frames)
    examples = examples[:k]
    if k < num_frames:
        examples = torch.cat([examples, examples[-1:].expand(num_frames - k, -1, -1, -1)])
    return examples.contiguous(), k


def resize_probs(probs: np.ndarray, height: int, width: int) -> np.ndarray:
    """Probabilities float ``[T, h, w]`` -> float32 ``[T, height, width]`` (bilinear, ``align_corners=False``,
    the interpolation the model uses for its own outputs). No copy when the size already matches."""
    if probs.ndim != 3:
        raise ValueError(f"expected probabilities [T, H, W], got {list(probs.shape)}")
    if probs.shape[1:] == (height, width):
        return probs.astype(np.float32, copy=False)
    x = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32))[None]  # [1, T, h, w]
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)[0].numpy()


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_frame_folder(folder: str) -> List[str]:
    """Image files of a folder of frames (one frame per second), in natural order (``x_2`` before ``x_10``).

    Raises:
        NotADirectoryError: ``folder`` is not a directory.
        ValueError: it holds no image file (extensions :data:`IMAGE_EXTENSIONS`).
    """
    if not os.path.isdir(folder):
        raise NotADirectoryError(f"{folder}: not a directory of frames")
    names = [n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS)]
    if not names:
        raise ValueError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in the frames folder")
    return [os.path.join(folder, n) for n in sorted(names, key=_natural_key)]


def read_rgb(path: str) -> np.ndarray:
    """An image file as RGB uint8 ``[H, W, 3]``; errors name the file."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as e:
        raise ValueError(f"{path}: cannot read image: {e}") from e
