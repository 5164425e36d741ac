"""One clip of fixed size through AQFormer, on tensors only: the module the ONNX export traces and the
PyTorch backend runs eagerly, so both backends execute the same code.

Two heads, one per kind of meta-architecture, looked up with :func:`clip_module_class` (a registry keyed by
meta-architecture class, searched along the class's MRO, so a subclass gets its parent's head):

* :class:`ClipSegmentationModule` (``AQFormer``, S4 / MS3): sound probabilities ``[T, H, W]``;
* :class:`SemanticClipModule` (``AQFormerSemantic``, AVSS): per-class scores ``[T, K, H, W]``. Not exportable
  to ONNX (:attr:`onnx_exportable`): the export and the ONNX Runtime backend refuse it.

``AQFormer.forward`` takes a list of clip dicts and pads the frames with detectron2's ``ImageList``,
whose data-dependent shapes neither ONNX exporter handles (the TorchScript exporter turns the padded
frames into a constant). This module fixes T, H and W at construction, appends zero rows /
columns when H or W is not a multiple of the model's size divisibility, and calls the meta-arch's
own pieces (:meth:`AQFormer.normalize`, its audio encoder, :meth:`AQFormer.decode`,
:meth:`AQFormer.upsample_logits`), the same ones ``AQFormer.forward`` runs.
"""
from __future__ import annotations

from typing import Dict, Tuple, Type

import torch
from torch import nn
from torch.nn import functional as F

from ..modeling.meta_arch.aqformer import AQFormer
from ..modeling.meta_arch.aqformer_semantic import AQFormerSemantic, semantic_inference
from .clips import ClipInputShapes
from .outputs import ClassScores, ClipOutput, SoundProbabilities

__all__ = ["ClipSegmentationModule", "SemanticClipModule", "clip_module_class", "padded_size"]


def padded_size(height: int, width: int, size_divisibility: int) -> Tuple[int, int]:
    """(H, W) rounded up to multiples of ``size_divisibility`` (unchanged for <= 1), as ``ImageList`` pads."""
    if size_divisibility <= 1:
        return height, width
    d = size_divisibility
    return -(-height // d) * d, -(-width // d) * d


class ClipSegmentationModule(ClipInputShapes, nn.Module):
    """Sound probabilities of one clip of ``num_frames`` frames of ``height`` x ``width``.

    ``forward(frames, audio)``: frames uint8 ``[T, 3, H, W]`` in ``INPUT.FORMAT`` channel order, audio float
    ``[T, 1, 96, 64]`` VGGish log-mel examples -> probabilities ``[T, H, W]`` (sigmoid of eq. 6, bilinearly
    upsampled to the input size as ``AQFormer.postprocess`` does).

    Args:
        model: an ``AQFormer`` meta-architecture (not copied; its weights are shared). The module is put
            in eval mode, and with it ``model``.
        num_frames: T; must equal the model's ``num_frames``.
        height, width: frame size H, W the module is fixed to.
    """

    # Whether tools/export_onnx.py can trace this head (its graph has one output "probs" [T, H, W]).
    onnx_exportable = True

    def __init__(self, model: nn.Module, num_frames: int, height: int, width: int):
        super().__init__()
        if num_frames != model.num_frames:
            raise ValueError(
                f"ClipSegmentationModule: T = {num_frames}, but the model was built for "
                f"MODEL.AQFORMER.NUM_FRAMES = {model.num_frames}"
            )
        if height < 1 or width < 1:
            raise ValueError(f"ClipSegmentationModule: frame size must be positive, got {height}x{width}")
        self.model = model
        self.num_frames = num_frames
        self.height = height
        self.width = width
        self.padded_hw = padded_size(height, width, model.size_divisibility)
        # Inference only. A fresh nn.Module starts in training mode, and exporters that restore the mode
        # they found would put the shared model back into training mode (batch norm updating its statistics).
        self.eval()

    def clip_output(self) -> ClipOutput:
        """What :meth:`forward` returns, and how it becomes labels at the frame size."""
        return SoundProbabilities()

    def check_inputs(self, frames: torch.Tensor, audio: torch.Tensor) -> None:
        """Shapes and dtype of one clip; errors give the expected and the actual shape."""
        if tuple(frames.shape) != self.frames_shape or frames.dtype != torch.uint8:
            raise ValueError(
                f"ClipSegmentationModule: frames must be uint8 {list(self.frames_shape)}, "
                f"got {frames.dtype} {list(frames.shape)}"
            )
        if tuple(audio.shape) != self.audio_shape:
            raise ValueError(
                f"ClipSegmentationModule: audio must be {list(self.audio_shape)}, got {list(audio.shape)}"
            )

    def forward(self, frames: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        self.check_inputs(frames, audio)
        model = self.model
        pad_h, pad_w = self.padded_hw[0] - self.height, self.padded_hw[1] - self.width
        x = model.normalize(frames)  # [T, 3, H, W]
        # Zeros after normalisation at the bottom / right, as ImageList pads. Concatenated rather than F.pad:
        # the TorchScript exporter computes F.pad's pads at run time, and the graph would lose its static shapes.
        if pad_h:
            x = torch.cat([x, x.new_zeros(self.num_frames, 3, pad_h, self.width)], dim=2)  # [T, 3, Hp, W]
        if pad_w:
            x = torch.cat([x, x.new_zeros(self.num_frames, 3, self.padded_hw[0], pad_w)], dim=3)  # [T, 3, Hp, Wp]
        feats = model.audio_encoder(audio.to(model.dtype))  # [T, C_a]
        feats = feats.view(1, self.num_frames, -1)  # [B=1, T, C_a]
        return self.head(model.decode(x, feats))

    def head(self, outputs: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Decoder outputs -> sound probabilities [T, H, W] (sigmoid of eq. 6 at the input size)."""
        logits = self.model.upsample_logits(outputs["pred_masks"], self.padded_hw)  # [1, T, Hp, Wp]
        return logits[0, :, : self.height, : self.width].sigmoid()  # [T, H, W]


class SemanticClipModule(ClipSegmentationModule):
    """Per-class scores of one clip for the AVSS meta-architecture: ``forward(frames, audio)`` -> float
    ``[T, K, H, W]``, ``AQFormerSemantic.inference`` at the input size (each frame's N mask logits upsampled
    to the padded size, cropped, then Mask2Former's semantic inference, ``Σ_n softmax(c_n)[:K] σ(m_n)``)."""

    onnx_exportable = False

    def clip_output(self) -> ClipOutput:
        return ClassScores(self.model.num_classes)

    def head(self, outputs: Dict[str, torch.Tensor]) -> torch.Tensor:
        class_logits, mask_logits = outputs["pred_logits"][0], outputs["pred_masks"][0]  # [T, N, K+1], [T, N, h, w]
        scores = []
        for t in range(self.num_frames):  # one frame at a time: N masks at full size, not T x N
            logits = F.interpolate(mask_logits[t][None], size=self.padded_hw, mode="bilinear", align_corners=False)
            logits = logits[0, :, : self.height, : self.width]  # [N, H, W]
            scores.append(semantic_inference(class_logits[t], logits))  # [K, H, W]
        return torch.stack(scores)  # [T, K, H, W]


# meta-architecture class -> clip module class; looked up along the MRO (most derived first).
_CLIP_MODULES: Dict[type, Type[ClipSegmentationModule]] = {
    AQFormer: ClipSegmentationModule,
    AQFormerSemantic: SemanticClipModule,
}


def clip_module_class(meta_arch: type) -> Type[ClipSegmentationModule]:
    """The clip module for a meta-architecture class (or a subclass of a known one).

    Raises:
        ValueError: ``meta_arch`` derives from no known meta-architecture.
    """
    for cls in meta_arch.__mro__:
        if cls in _CLIP_MODULES:
            return _CLIP_MODULES[cls]
    raise ValueError(
        f"{meta_arch.__name__}: no clip inference head for this meta-architecture; known: "
        f"{sorted(c.__name__ for c in _CLIP_MODULES)} and their subclasses"
    )
