"""What a clip segmenter's output means, and how it becomes one label per pixel at the frame size.

A :class:`ClipOutput` describes the array a :class:`~.segmenter.ClipSegmenter` returns for a clip and turns
the real frames' outputs (computed at the segmenter's size S x S) into

* ``labels``: uint8 ``[n, height, width]``, the class of each pixel at the original frame size, 0 = background
  (no sounding object), and
* ``probs``: float32 ``[n, height, width]`` sound probabilities where the model gives them, else None.

Kinds:

* :class:`SoundProbabilities` (S4 / MS3 ``AQFormer``): output float ``[T, S, S]``; probabilities resized
  bilinearly to the frame size, labels ``probs > mask_threshold`` (1 = sounding object). Legend: background
  and "sounding object".
* :class:`ClassScores` (AVSS ``AQFormerSemantic``): output float ``[T, K, S, S]`` per-class scores; each frame's
  K maps resized bilinearly to the frame size, labels their argmax (0..K-1, 0 = background). Legend: the
  dataset's class names and palette (``stuff_classes`` / ``stuff_colors``).

Both resize the model's output (probabilities, class scores), not its logits, so the two kinds are treated
alike; the evaluation path resizes logits before the sigmoid (the demo's masks may differ from it on
boundary pixels).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.nn import functional as F

from .clips import resize_probs

__all__ = ["ClassScores", "ClipOutput", "Legend", "SoundProbabilities", "SOUNDING_OBJECT_COLOR"]

# RGB of the sounding-object tint of S4 / MS3 models.
SOUNDING_OBJECT_COLOR = (255, 40, 40)


@dataclass
class Legend:
    """Class names and RGB colours, index = label value (0 = background, never tinted)."""

    names: List[str]
    colors: np.ndarray  # uint8 [K, 3]

    def __post_init__(self):
        self.colors = np.asarray(self.colors, dtype=np.uint8).reshape(-1, 3)
        if len(self.names) != self.colors.shape[0]:
            raise ValueError(f"legend: {len(self.names)} class names but {self.colors.shape[0]} colours")


class ClipOutput(abc.ABC):
    """One segmenter output kind (module doc). ``num_classes``: label values 0..num_classes-1."""

    name = ""
    num_classes = 2

    def output_shape(self, num_frames: int, height: int, width: int) -> Tuple[int, ...]:
        return (num_frames, height, width)

    @abc.abstractmethod
    def to_frames(self, out: np.ndarray, height: int, width: int,
                  mask_threshold: float) -> Tuple[Optional[np.ndarray], np.ndarray]:
        """The n real frames' output (``output_shape`` with T = n) -> (probs or None, labels), both
        ``[n, height, width]``."""

    @abc.abstractmethod
    def legend(self, metadata=None, class_names: Optional[Sequence[str]] = None) -> Legend:
        """Names and colours of the label values (``metadata``: a detectron2 ``Metadata``; ``class_names``
        overrides its ``stuff_classes``)."""


class SoundProbabilities(ClipOutput):
    """Sound probabilities ``[T, S, S]`` of a binary (S4 / MS3) model."""

    name = "sound_probs"

    def to_frames(self, out, height, width, mask_threshold):
        probs = resize_probs(out, height, width)  # [n, height, width]
        return probs, (probs > mask_threshold).astype(np.uint8)

    def legend(self, metadata=None, class_names=None) -> Legend:
        return Legend(["background", "sounding object"], [(0, 0, 0), SOUNDING_OBJECT_COLOR])


class ClassScores(ClipOutput):
    """Per-class scores ``[T, K, S, S]`` of an AVSS model (K classes, background = 0; K <= 256 for uint8 labels).

    ``mask_threshold`` is not used: a pixel's label is the argmax over the K classes, as AVSS is evaluated."""

    name = "class_scores"

    def __init__(self, num_classes: int):
        if not 2 <= int(num_classes) <= 256:
            raise ValueError(f"ClassScores: num_classes must be in 2..256 (uint8 labels), got {num_classes}")
        self.num_classes = int(num_classes)

    def output_shape(self, num_frames, height, width):
        return (num_frames, self.num_classes, height, width)

    def to_frames(self, out, height, width, mask_threshold):
        if out.ndim != 4 or out.shape[1] != self.num_classes:
            raise ValueError(f"expected class scores [n, {self.num_classes}, H, W], got {list(out.shape)}")
        labels = np.empty((out.shape[0], height, width), np.uint8)
        for i, scores in enumerate(out):  # one frame at a time: K maps at the frame size
            x = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))[None]  # [1, K, S, S]
            if tuple(x.shape[-2:]) != (height, width):
                x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)  # [1, K, H, W]
            labels[i] = x[0].argmax(0).numpy()  # [height, width]
        return None, labels

    def legend(self, metadata=None, class_names=None) -> Legend:
        dataset = getattr(metadata, "name", "the dataset")
        names = list(class_names) if class_names is not None else (metadata.get("stuff_classes") if metadata else None)
        colors = metadata.get("stuff_colors") if metadata else None
        if names is None or colors is None:
            raise ValueError(
                f"{dataset}: the AVSS model needs class names and colours (MetadataCatalog 'stuff_classes' / "
                f"'stuff_colors'); give the class names with the dataset's label2idx.json (demo/demo.py --label2idx FILE)"
            )
        if len(names) != self.num_classes or len(colors) < self.num_classes:
            raise ValueError(
                f"{dataset}: the model has {self.num_classes} classes but there are {len(names)} class names and "
                f"{len(colors)} colours"
            )
        return Legend(list(names), np.asarray(colors[: self.num_classes]))
