"""Dataset mapper for AVSBench-semantic (AVSS): dataset dict of register_avss.py -> the AVSS clip dict.

Padding follows the official loader (OpenNLPLab/AVSBench ``avs_scripts/avss/color_dataloader.py``):
every clip is padded to ``pad_frames`` (10) frames. The official loader pads the *normalised* image
tensor with zeros, i.e. frames of the mean colour; here the padded uint8 frames are the pixel mean
rounded, which the model's normalisation turns into zeros up to 0.5 / 255 / std. Padded frames carry
no label (sem_seg 255) and zero audio. Supervised frames (``mask_valid``) are the labelled ones:
v1s training clips frame 0 only, otherwise all real frames (official ``gt_temporal_mask_flag``).
"""
from __future__ import annotations

import copy
import logging
from typing import List, Optional, Sequence

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import transforms as T

from ..datasets.register_avss import AVSS_IGNORE_LABEL, avss_palette, read_avss_label
from .avs_clip_mapper import augment_clip, build_avs_augmentations, check_frame_sizes, load_audio_examples, read_frame
from .build import AQ_DATASET_MAPPER_REGISTRY

__all__ = ["AVSSClipMapper"]

logger = logging.getLogger(__name__)


@AQ_DATASET_MAPPER_REGISTRY.register()
class AVSSClipMapper:
    """Map an AVSS dataset dict to the clip dict of the AVSS contract (docs/avss.md):

    "images" uint8 ``[T, 3, H, W]``, "audio" float32 ``[T, 1, 96, 64]`` (zeros on padded frames),
    "sem_seg" int64 ``[T, H, W]`` (class index, 255 on frames without supervision; present when the
    clip has a label), "mask_valid" bool ``[T]`` (labelled frames), "frame_valid" bool ``[T]`` (real
    frames), "height", "width" (original size), "video_id", "subset", "task": "avss", and
    "frame_files" / "label_files" ``[T]`` with None for padded (and unlabelled) frames. T = pad_frames.
    """

    @configurable
    def __init__(
        self,
        *,
        is_train: bool,
        augmentations: Sequence[T.Augmentation],
        image_format: str,
        pad_frames: int,
        pad_value: Sequence[float],
        audio_source: str,
        zero_audio: bool = False,
    ):
        """
        Args:
            is_train: training mode (logging only; randomness lives in ``augmentations``).
            augmentations: detectron2 augmentations drawn once per clip, applied to all frames and labels.
            image_format: cfg.INPUT.FORMAT of the frames.
            pad_frames: T after padding (cfg.INPUT.AVSS.PAD_FRAMES, 10 as the official loader).
            pad_value: colour of padded frames in ``image_format`` channel order (cfg.MODEL.PIXEL_MEAN),
                rounded to uint8.
            audio_source: "wav" (log-mel computed from audio.wav) or "logmel" (audio_log_mel.pkl).
            zero_audio: replace every real frame's audio by zeros (audio-blind control).
        """
        if audio_source not in ("logmel", "wav"):
            raise ValueError(f"audio_source must be 'logmel' or 'wav', got {audio_source!r}.")
        if len(pad_value) != 3:
            raise ValueError(f"pad_value must have 3 channels, got {list(pad_value)}.")
        self.is_train = is_train
        self.augmentations = T.AugmentationList(list(augmentations))
        self.image_format = image_format
        self.pad_frames = int(pad_frames)
        self.pad_value = np.clip(np.rint(np.asarray(pad_value, dtype=np.float64)), 0, 255).astype(np.uint8)  # [3]
        self.audio_source = audio_source
        self.zero_audio = bool(zero_audio)
        if self.zero_audio:
            logger.warning("[AVSSClipMapper] INPUT.AUDIO.ZERO_INPUT: every clip's audio is replaced by zeros")
        logger.info("[AVSSClipMapper] %s augmentations: %s; clips padded to %d frames",
                    "training" if is_train else "inference", self.augmentations, self.pad_frames)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return {
            "is_train": is_train,
            "augmentations": build_avs_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "pad_frames": cfg.INPUT.AVSS.PAD_FRAMES,
            "pad_value": cfg.MODEL.PIXEL_MEAN,
            "audio_source": cfg.INPUT.AUDIO.SOURCE,
            "zero_audio": cfg.INPUT.AUDIO.ZERO_INPUT,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        d = copy.deepcopy(dataset_dict)
        video = f"{d.get('subset')}/{d['video_id']}"
        frame_files: List[str] = list(d["frame_files"])
        label_files: List[Optional[str]] = list(d["label_files"])
        n, t_pad = len(frame_files), self.pad_frames
        if len(label_files) != n or n != int(d["num_frames"]):
            raise ValueError(f"Clip {video!r}: {n} frames, {len(label_files)} label entries, num_frames {d['num_frames']}.")
        if n > t_pad:
            raise ValueError(f"Clip {video!r} has {n} frames, more than INPUT.AVSS.PAD_FRAMES = {t_pad}.")
        height, width = int(d["height"]), int(d["width"])
        palette = avss_palette(int(d["num_classes"]))

        frames = [read_frame(p, self.image_format) for p in frame_files]  # n x [H0, W0, 3]
        check_frame_sizes(video, frame_files, [f.shape[:2] for f in frames], (height, width))
        labels: List[Optional[np.ndarray]] = []
        for p in label_files:
            if p is None:
                labels.append(None)
                continue
            lab = read_avss_label(p, palette)  # [H0, W0] uint8 class indices
            if lab.shape != (height, width):
                raise ValueError(f"Label {p} is {lab.shape[0]}x{lab.shape[1]} (HxW), but its frames are {height}x{width}.")
            labels.append(lab)

        frames, transforms = augment_clip(self.augmentations, frames)  # n x [H, W, 3], one draw per clip
        out_h, out_w = frames[0].shape[:2]
        images = torch.empty((t_pad, 3, out_h, out_w), dtype=torch.uint8)  # [T, 3, H, W]
        images[n:] = torch.from_numpy(self.pad_value)[:, None, None]
        for t, f in enumerate(frames):
            images[t] = torch.from_numpy(np.ascontiguousarray(f.transpose(2, 0, 1)))

        audio = torch.zeros((t_pad, 1, 96, 64), dtype=torch.float32)  # [T, 1, 96, 64], padded frames silent
        real_audio = load_audio_examples(d, self.audio_source, n)  # [n, 1, 96, 64]
        if not self.zero_audio:
            audio[:n] = real_audio

        frame_valid = torch.zeros(t_pad, dtype=torch.bool)  # [T]
        frame_valid[:n] = True
        mask_valid = torch.zeros(t_pad, dtype=torch.bool)  # [T]
        out = {
            "images": images,
            "audio": audio,
            "frame_valid": frame_valid,
            "mask_valid": mask_valid,
            "height": height,
            "width": width,
            "video_id": d["video_id"],
            "subset": d.get("subset"),
            "task": "avss",
            "frame_files": frame_files + [None] * (t_pad - n),
            "label_files": label_files + [None] * (t_pad - n),
        }
        if any(lab is not None for lab in labels):
            sem_seg = torch.full((t_pad, out_h, out_w), AVSS_IGNORE_LABEL, dtype=torch.int64)  # [T, H, W]
            for t, lab in enumerate(labels):
                if lab is None:
                    continue
                lab = transforms.apply_segmentation(lab)  # [H, W], nearest neighbour
                sem_seg[t] = torch.from_numpy(np.ascontiguousarray(lab).astype(np.int64))
                mask_valid[t] = True
            out["sem_seg"] = sem_seg
        return out
