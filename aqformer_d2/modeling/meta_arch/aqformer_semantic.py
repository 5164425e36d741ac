"""AQFormer for AVSBench-semantic (AVSS), registered as "AQFormerSemantic" (beyond the paper; see
docs/paper_choices.md, "Beyond the paper: AVSS").

Same backbone, audio encoder, pixel decoder (eq. 1-2, ABTI eq. 9-12) and preprocessing as :class:`AQFormer`
(inherited, not copied); the transformer decoder is the registered AVSS decoder (N audio-conditioned queries per
frame with a (K+1)-way class head, MODEL.AQFORMER.TRANSFORMER_DECODER_NAME "AudioQueriedSemanticDecoder"); the
losses are :class:`AQSemanticCriterion`; inference is Mask2Former's semantic inference.

Input (the clip dict of ``AVSSClipMapper``, docs/interfaces.md): "images" uint8 [T, 3, H, W], "audio" float
[T, 1, 96, 64], training: "sem_seg" int64 [T, H, W] (0..K-1, 255 = no supervision), "mask_valid" bool [T],
"frame_valid" bool [T] (optional: all True when absent). Output: training -> dict of scalar losses; inference ->
one dict per clip ``{"sem_seg": float32 [T, K, height, width]}``, the per-class scores
``Σ_n softmax(class_n)[:K] * sigmoid(mask_n)`` (the "no object" probability dropped).
"""
from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList
from torch import nn
from torch.nn import functional as F

from ..semantic_criterion import AQSemanticCriterion
from .aqformer import AQFormer

__all__ = ["AQFormerSemantic", "semantic_inference"]


def semantic_inference(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Mask2Former's semantic inference for one frame: ``S[k, x] = Σ_n softmax(c_n)[k] σ(m_n(x))``, k < K.

    Args:
        class_logits: [N, K+1] (the last class is "no object", dropped after the softmax).
        mask_logits: [N, H, W].

    Returns:
        [K, H, W] per-class scores.
    """
    probs = class_logits.softmax(-1)[:, :-1]  # [N, K]
    return torch.einsum("nk,nhw->khw", probs, mask_logits.sigmoid())


@META_ARCH_REGISTRY.register()
class AQFormerSemantic(AQFormer):
    """AQFormer with the AVSS head (module docstring). Constructor arguments: those of :class:`AQFormer` plus
    ``num_classes`` and ``ignore_value``."""

    @configurable
    def __init__(self, *, num_classes: int, ignore_value: int = 255, **kwargs):
        """
        Args:
            num_classes: K, classes including background (MODEL.AQ_SEMANTIC.NUM_CLASSES).
            ignore_value: label of pixels without supervision; also fills the size-divisibility padding.
            kwargs: the arguments of :class:`AQFormer` (predictor: the AVSS decoder; criterion:
                :class:`AQSemanticCriterion`).
        """
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_value = ignore_value

    @classmethod
    def from_config(cls, cfg):
        args = super().from_config(cfg)
        args.update(num_classes=cfg.MODEL.AQ_SEMANTIC.NUM_CLASSES, ignore_value=cfg.MODEL.AQ_SEMANTIC.IGNORE_VALUE)
        return args

    @classmethod
    def build_criterion(cls, cfg) -> nn.Module:
        sem = cfg.MODEL.AQ_SEMANTIC
        return AQSemanticCriterion(
            num_classes=sem.NUM_CLASSES,
            class_weight=sem.CLASS_WEIGHT,
            mask_weight=sem.MASK_WEIGHT,
            dice_weight=sem.DICE_WEIGHT,
            no_object_weight=sem.NO_OBJECT_WEIGHT,
            cost_class=sem.COST_CLASS,
            cost_mask=sem.COST_MASK,
            cost_dice=sem.COST_DICE,
            sim_weight=sem.SIM_WEIGHT,
            sim_queries=sem.SIM_QUERIES,
            deep_supervision=cfg.MODEL.AQFORMER.DEEP_SUPERVISION,
            ignore_value=sem.IGNORE_VALUE,
        )

    def encode_audio(self, batched_inputs: List[Dict], key: str = "audio") -> torch.Tensor:
        """Audio features A [B, T, C_a] of :meth:`AQFormer.encode_audio`, times ``frame_valid`` [B, T]: the
        feature of a padded frame is zero in every pathway, as the official AVSS scripts multiply the VGGish
        feature by ``vid_temporal_mask_flag`` (zero log-mel alone gives the encoder's response to silence,
        not zero). Clips without "frame_valid" count all frames as real."""
        feats = super().encode_audio(batched_inputs, key)  # [B, T, C_a]
        real = torch.stack([
            clip["frame_valid"].bool() if "frame_valid" in clip else torch.ones(feats.shape[1], dtype=torch.bool)
            for clip in batched_inputs
        ]).to(feats.device)  # [B, T]
        if real.shape != feats.shape[:2]:
            raise ValueError(f"AQFormerSemantic: frame_valid {tuple(real.shape)} does not match the audio's "
                             f"[B, T] = {tuple(feats.shape[:2])}")
        return feats * real[..., None].to(feats.dtype)  # [B, T, C_a]

    # ------------------------------------------------------------------ training
    def prepare_targets(self, batched_inputs: List[Dict], padded_hw) -> Dict[str, torch.Tensor]:
        """Labels padded like the frames (with the ignore value): sem_seg int64 [B, T, Hp, Wp], mask_valid and
        frame_valid bool [B, T]."""
        hp, wp = padded_hw
        labels, mask_valid, frame_valid = [], [], []
        for i, clip in enumerate(batched_inputs):
            name = f"AQFormerSemantic: training clip {i} ({clip.get('video_id', '?')})"
            if "sem_seg" not in clip or "mask_valid" not in clip:
                raise KeyError(f"{name} has no 'sem_seg'/'mask_valid'")
            sem_seg = clip["sem_seg"].to(self.device, torch.int64)  # [T, H, W]
            frames = clip["images"].shape[0]
            if sem_seg.dim() != 3 or sem_seg.shape[0] != frames or sem_seg.shape[-2:] != clip["images"].shape[-2:]:
                raise ValueError(
                    f"{name}: sem_seg {tuple(sem_seg.shape)} does not match its images {tuple(clip['images'].shape)}"
                )
            pad = (0, wp - sem_seg.shape[-1], 0, hp - sem_seg.shape[-2])
            labels.append(F.pad(sem_seg, pad, value=self.ignore_value))
            mask_valid.append(clip["mask_valid"].to(self.device).bool())
            real = clip.get("frame_valid", torch.ones(frames, dtype=torch.bool))
            frame_valid.append(real.to(self.device).bool())
        return {"sem_seg": torch.stack(labels), "mask_valid": torch.stack(mask_valid),
                "frame_valid": torch.stack(frame_valid)}

    def losses(self, outputs: Dict, images: ImageList, batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        targets = self.prepare_targets(batched_inputs, images.tensor.shape[-2:])
        return self.criterion(outputs, targets["sem_seg"], targets["mask_valid"], targets["frame_valid"])

    # ------------------------------------------------------------------ inference
    def inference(self, outputs: Dict, images: ImageList, batched_inputs: List[Dict]) -> List[Dict]:
        """Per clip {"sem_seg": [T, K, height, width]}: each frame's mask logits [N, h4, w4] are upsampled to the
        padded size, cropped to the frame's input size, resized to (height, width), then
        :func:`semantic_inference` (one frame at a time: N full-size masks at once would be T times larger)."""
        class_logits, mask_logits = outputs["pred_logits"], outputs["pred_masks"]  # [B, T, N, K+1], [B, T, N, h, w]
        padded_hw = tuple(images.tensor.shape[-2:])
        results = []
        for b, clip in enumerate(batched_inputs):
            h, w = images.image_sizes[b * self.num_frames]
            out_hw = (clip.get("height", h), clip.get("width", w))
            scores = []
            for t in range(mask_logits.shape[1]):
                logits = F.interpolate(mask_logits[b, t][None], size=padded_hw, mode="bilinear", align_corners=False)
                logits = logits[:, :, :h, :w]  # [1, N, h, w]
                if out_hw != (h, w):
                    logits = F.interpolate(logits, size=out_hw, mode="bilinear", align_corners=False)
                scores.append(semantic_inference(class_logits[b, t], logits[0]).float())  # [K, height, width]
            results.append({"sem_seg": torch.stack(scores)})  # [T, K, height, width]
        return results
