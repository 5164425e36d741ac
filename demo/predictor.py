"""VideoPredictor: build AQFormer from a config, load its weights, and segment clips of one-second steps.

A video is cut into clips of T = ``MODEL.AQFORMER.NUM_FRAMES`` consecutive seconds (one frame and one
0.96 s VGGish log-mel example per second, as AVSBench). A last clip with fewer than T seconds is
padded by repeating its last frame and its last audio example (AVSBench pads a clip's audio by
repeating the last example); the padded frames' outputs are dropped.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from detectron2.modeling import build_model

from aqformer_d2.audio.logmel import waveform_to_examples
from aqformer_d2.checkpoint import AQCheckpointer

__all__ = ["ClipPlan", "VideoPredictor", "list_frame_folder", "read_rgb", "IMAGE_EXTENSIONS"]

logger = logging.getLogger("aqformer_demo.predictor")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
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


class VideoPredictor:
    """AQFormer in eval mode on one device, plus the clip-level pre-processing of the demo.

    Args:
        cfg: a config with the AQFormer keys (``add_aqformer_config``) merged; not modified.
        device: "cpu", "cuda", "cuda:1" ...; None keeps ``cfg.MODEL.DEVICE``.

    ``cfg.MODEL.WEIGHTS`` is loaded with :class:`aqformer_d2.checkpoint.AQCheckpointer`; an empty value
    keeps the random initialisation (logged as a warning).
    """

    def __init__(self, cfg, device: str = None):
        cfg = cfg.clone()
        if device is not None:
            cfg.defrost()
            cfg.MODEL.DEVICE = device
        cfg.freeze()
        self.cfg = cfg
        self.model = build_model(cfg)
        self.model.eval()
        weights = cfg.MODEL.WEIGHTS
        if weights:
            if not os.path.isfile(weights):
                raise FileNotFoundError(f"{weights}: MODEL.WEIGHTS file not found")
            AQCheckpointer(self.model).load(weights)
        else:
            logger.warning("MODEL.WEIGHTS is empty: the model keeps its random initialisation")
        self.weights = weights
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.num_frames = int(cfg.MODEL.AQFORMER.NUM_FRAMES)
        self.image_size = int(cfg.INPUT.IMAGE_SIZE)
        self.threshold = float(cfg.MODEL.AQFORMER.MASK_THRESHOLD)
        if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
            raise ValueError(f"cfg.INPUT.FORMAT = {cfg.INPUT.FORMAT!r}; the demo supports 'RGB' and 'BGR'")
        self.input_format = cfg.INPUT.FORMAT

    # ------------------------------------------------------------------ pre-processing
    def preprocess_frame(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 ``[H, W, 3]`` -> uint8 ``[3, S, S]`` (S = INPUT.IMAGE_SIZE) in ``INPUT.FORMAT`` order.

        Bilinear resize with PIL, as the dataset mapper's ``Resize((S, S))`` does at test time.
        """
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 [H, W, 3] frame, got {list(rgb.shape)} {rgb.dtype}")
        im = Image.fromarray(rgb).resize((self.image_size, self.image_size), Image.BILINEAR)
        out = np.asarray(im)  # [S, S, 3] RGB
        if self.input_format == "BGR":
            out = out[:, :, ::-1]
        return np.ascontiguousarray(out.transpose(2, 0, 1))  # [3, S, S]

    def plan_clips(self, num_seconds: int) -> List[ClipPlan]:
        """Cut seconds 0..num_seconds-1 into clips of T; the last one may be padded."""
        if num_seconds < 1:
            raise ValueError(f"nothing to segment: {num_seconds} sampled seconds")
        t = self.num_frames
        plans = []
        for index, start in enumerate(range(0, num_seconds, t)):
            seconds = list(range(start, min(start + t, num_seconds)))
            plans.append(ClipPlan(index=index, seconds=seconds, num_padded=t - len(seconds)))
        return plans

    def clip_frames(self, frames: Sequence[np.ndarray], plan: ClipPlan) -> torch.Tensor:
        """uint8 ``[T, 3, S, S]`` of a clip from the pre-processed frames of all seconds; the last real
        frame is repeated for padding."""
        real = [frames[s] for s in plan.seconds]
        return torch.from_numpy(np.stack(real + [real[-1]] * plan.num_padded))  # [T, 3, S, S]

    def clip_audio(self, waveform: np.ndarray, sample_rate: int, plan: ClipPlan) -> Tuple[torch.Tensor, int]:
        """VGGish examples ``[T, 1, 96, 64]`` of a clip, and how many of them come from the audio.

        The audio of the clip's real seconds ``[s0, s0 + n)`` gives floor examples of 0.96 s (at most n,
        AVSBench's convention for a 5 s clip); the last one is repeated up to T. A segment shorter than
        one example (0.975 s: a short last second, or audio that ends before the video) is extended
        backwards to the last 0.975 s of audio available up to its end.

        Raises:
            ValueError: the whole audio is shorter than one example.
        """
        n_audio = waveform.shape[-1]
        start = plan.seconds[0] * sample_rate
        end = min((plan.seconds[-1] + 1) * sample_rate, n_audio)
        min_samples = int(np.ceil(_MIN_EXAMPLE_SAMPLES * sample_rate / 16000))
        if end - start < min_samples:
            end = min(max(end, min_samples), n_audio)
            start = max(0, end - min_samples)
        if end - start < min_samples:
            raise ValueError(
                f"audio of {n_audio / sample_rate:.3f} s is shorter than one VGGish example (0.975 s)"
            )
        examples = waveform_to_examples(waveform[start:end], sample_rate)  # [k, 1, 96, 64]
        k = min(examples.shape[0], len(plan.seconds), self.num_frames)
        examples = examples[:k]
        if k < self.num_frames:
            examples = torch.cat([examples, examples[-1:].expand(self.num_frames - k, -1, -1, -1)])
        return examples.contiguous(), k

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def __call__(self, images: torch.Tensor, audio: torch.Tensor, height: int, width: int) -> np.ndarray:
        """Foreground probabilities float32 ``[T, height, width]`` of one clip.

        Args:
            images: uint8 ``[T, 3, S, S]`` (from :meth:`clip_frames`).
            audio: float ``[T, 1, 96, 64]`` (from :meth:`clip_audio`).
            height, width: output size (the original frame size).
        """
        clip = {"images": images, "audio": audio.float(), "height": int(height), "width": int(width)}
        probs = self.model([clip])[0]["sound_probs"]  # [T, height, width]
        return probs.float().cpu().numpy()
