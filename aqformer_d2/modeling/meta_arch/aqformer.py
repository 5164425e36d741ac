"""The AQFormer meta-architecture (Huang et al., IJCAI 2023, Fig. 2), registered as "AQFormer".

Data flow for a batch of B clips of T frames (see docs/architecture.md):

    frames [B*T, 3, H, W] --backbone--> V^1..V^4 (strides 32..4)
    audio  [B*T, 1, 96, 64] --audio encoder--> A [B, T, C_a]                        (§3.1)
    (V, A) --pixel decoder (eq. 1-2, MSDeformAttn, ABTI eq. 9-12)--> M̂^1..M̂^3, M̂^4  (§3.2, §3.4)
    (M̂^1..3, M̂^4, A) --audio-queried transformer decoder (eq. 3-6)--> mask logits     (§3.3)
    training: losses eq. (7), (8), (13), (14); inference: per-frame probabilities.
"""
from typing import Dict, List, Optional

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone
from detectron2.structures import ImageList

from ..audio_encoder.build import build_audio_encoder
from ..backbone.build import build_aq_backbone
from ..losses import AQFormerCriterion
from ..pixel_decoder.build import build_aq_pixel_decoder
from ..transformer_decoder.build import build_aq_transformer_decoder

__all__ = ["AQFormer", "AUDIO_PATHWAYS", "MEMORY_FORMATS", "resolve_memory_format"]

MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def resolve_memory_format(cfg) -> str:
    """cfg.MODEL.AQFORMER.MEMORY_FORMAT with "auto" resolved: "channels_last" on the CPU, else "contiguous"."""
    value = cfg.MODEL.AQFORMER.MEMORY_FORMAT
    if value == "auto":
        return "channels_last" if torch.device(cfg.MODEL.DEVICE).type == "cpu" else "contiguous"
    if value not in MEMORY_FORMATS:
        raise ValueError(
            f"MODEL.AQFORMER.MEMORY_FORMAT must be 'auto' or one of {sorted(MEMORY_FORMATS)}, got {value!r}"
        )
    return value

# The three ways audio enters the model (audio-pathway attribution, docs/interfaces.md):
# "pixel": A of eq. (1)-(2) in the pixel decoder; "abti": A of ABTI, eq. (9); "query": A^0 = Linear(A) of the
# transformer decoder (§3.3), whose refinements A^l are also what the AVSim loss, eq. (7), compares.
AUDIO_PATHWAYS = ("pixel", "abti", "query")


@META_ARCH_REGISTRY.register()
class AQFormer(nn.Module):
    """Audio-Queried Transformer for audio-visual segmentation.

    Input: a list of B clip dicts as produced by ``AVSClipMapper`` (docs/interfaces.md):
    ``"images"`` uint8 [T, 3, H, W], ``"audio"`` float [T, 1, 96, 64], and for training ``"masks"``
    uint8 [T, H, W] with ``"mask_valid"`` bool [T]. Optional ``"height"``/``"width"`` give the size
    the outputs are resized to at inference.

    Optional ``"pathway_audio"``: dict pathway -> float [T, 1, 96, 64] replacing ``"audio"`` in that
    pathway only (pathways: :data:`AUDIO_PATHWAYS`); every clip of a batch must name the same pathways.

    Output: training -> dict of scalar losses; inference -> list of B dicts
    ``{"sound_probs": float [T, height, width]}`` (foreground probability of each frame).
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        audio_encoder: nn.Module,
        pixel_decoder: nn.Module,
        predictor: nn.Module,
        criterion: nn.Module,
        num_frames: int,
        pixel_mean: List[float],
        pixel_std: List[float],
        size_divisibility: int = 32,
        memory_format: str = "contiguous",
    ):
        """
        Args:
            backbone: detectron2 Backbone giving the 4 scales (strides 4, 8, 16, 32).
            audio_encoder: maps [N, 1, 96, 64] log-mel examples to [N, C_a].
            pixel_decoder: AQ pixel decoder, ``(features, audio [B, T, C_a]) -> (M̂^4, [M̂^1, M̂^2, M̂^3])``.
            predictor: audio-queried transformer decoder (see docs/interfaces.md for its output dict).
            criterion: computes the loss dict from the predictor output and targets.
            num_frames: T, frames per clip; every input clip must have exactly T frames.
            pixel_mean, pixel_std: per-channel normalisation, in the input channel order.
            size_divisibility: frames are zero-padded to a multiple of this (0: the backbone's own).
            memory_format: "contiguous" (NCHW) or "channels_last" (NHWC): the layout of the 4-D weights
                (converted here; ``load_state_dict`` keeps it) and of the normalised frames.
        """
        super().__init__()
        self.backbone = backbone
        self.audio_encoder = audio_encoder
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor
        self.criterion = criterion
        self.num_frames = num_frames
        if size_divisibility <= 0:
            size_divisibility = self.backbone.size_divisibility
        self.size_divisibility = size_divisibility
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        if memory_format not in MEMORY_FORMATS:
            raise ValueError(f"AQFormer: memory_format must be one of {sorted(MEMORY_FORMATS)}, got {memory_format!r}")
        self.memory_format = MEMORY_FORMATS[memory_format]
        self.to(memory_format=self.memory_format)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_aq_backbone(cfg)
        q = cfg.MODEL.AQFORMER
        return {
            "backbone": backbone,
            "audio_encoder": build_audio_encoder(cfg),
            "pixel_decoder": build_aq_pixel_decoder(cfg, backbone.output_shape()),
            "predictor": build_aq_transformer_decoder(cfg),
            "criterion": cls.build_criterion(cfg),
            "num_frames": q.NUM_FRAMES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "size_divisibility": cfg.MODEL.AQFORMER.SIZE_DIVISIBILITY,
            "memory_format": resolve_memory_format(cfg),
        }

    @classmethod
    def build_criterion(cls, cfg) -> nn.Module:
        """The loss module of eq. (7), (8), (13), (14) (a subclass for another task builds its own)."""
        q = cfg.MODEL.AQFORMER
        return AQFormerCriterion(
            bce_weight=q.BCE_WEIGHT,
            dice_weight=q.DICE_WEIGHT,
            sim_weight=q.SIM_WEIGHT,
            deep_supervision=q.DEEP_SUPERVISION,
            sim_reduction=q.SIM_REDUCTION,
            sim_detach_mask=q.SIM_DETACH_MASK,
        )

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point type the model computes in: float32, or float64 after ``model.double()``."""
        return self.pixel_mean.dtype

    # ------------------------------------------------------------------ input handling
    def _check_clip(self, index: int, clip: Dict) -> None:
        for key in ("images", "audio"):
            if key not in clip:
                raise KeyError(f"AQFormer: clip {index} ({clip.get('video_id', '?')}) has no '{key}' entry")
        t_img = clip["images"].shape[0]
        t_aud = clip["audio"].shape[0]
        if t_img != self.num_frames or t_aud != self.num_frames:
            raise ValueError(
                f"AQFormer: clip {index} ({clip.get('video_id', '?')}) has {t_img} frames and {t_aud} audio "
                f"examples; MODEL.AQFORMER.NUM_FRAMES is {self.num_frames}"
            )

    def preprocess_images(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalise and pad the frames of all clips: returns an ImageList of B*T frames, [B*T, 3, Hp, Wp]."""
        frames = []
        for clip in batched_inputs:
            images = clip["images"].to(self.device)  # [T, 3, H, W]
            frames.extend(self.normalize(images).unbind(0))  # T x [3, H, W]; one op per clip, not per frame
        images = ImageList.from_tensors(frames, self.size_divisibility)
        images.tensor = images.tensor.contiguous(memory_format=self.memory_format)  # [B*T, 3, Hp, Wp]
        return images

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(x - PIXEL_MEAN) / PIXEL_STD in the model's dtype: [..., 3, H, W] uint8 or float -> same shape."""
        return (images.to(self.dtype) - self.pixel_mean) / self.pixel_std

    def encode_audio(self, batched_inputs: List[Dict], key: str = "audio") -> torch.Tensor:
        """Audio features A of eq. (1), (9) and the audio queries: returns [B, T, C_a].

        ``key``: "audio" (the clip's own audio), or a pathway name, read from ``clip["pathway_audio"]``."""
        if key == "audio":
            examples = [clip["audio"] for clip in batched_inputs]
        else:
            examples = [clip["pathway_audio"][key] for clip in batched_inputs]
        examples = torch.cat([x.to(self.device, self.dtype) for x in examples])  # [B*T, 1, 96, 64]
        feats = self.audio_encoder(examples)  # [B*T, C_a]
        return feats.view(len(batched_inputs), self.num_frames, -1)  # [B, T, C_a]

    def pathway_audio(self, batched_inputs: List[Dict], audio: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Audio feature of each pathway (:data:`AUDIO_PATHWAYS`), each [B, T, C_a]: ``audio`` unless the
        clips carry a ``"pathway_audio"`` entry for that pathway."""
        named = [tuple(sorted(clip.get("pathway_audio", {}))) for clip in batched_inputs]
        if len(set(named)) > 1:
            raise ValueError(f"AQFormer: clips of one batch name different 'pathway_audio' pathways: {named}")
        unknown = [p for p in named[0] if p not in AUDIO_PATHWAYS]
        if unknown:
            raise KeyError(f"AQFormer: unknown audio pathway(s) {unknown} in 'pathway_audio'; known: {AUDIO_PATHWAYS}")
        for i, clip in enumerate(batched_inputs):
            for p in named[0]:
                if tuple(clip["pathway_audio"][p].shape) != tuple(clip["audio"].shape):
                    raise ValueError(
                        f"AQFormer: clip {i} ({clip.get('video_id', '?')}) pathway_audio[{p!r}] has shape "
                        f"{tuple(clip['pathway_audio'][p].shape)}, its 'audio' {tuple(clip['audio'].shape)}"
                    )
        return {p: self.encode_audio(batched_inputs, p) if p in named[0] else audio for p in AUDIO_PATHWAYS}

    def prepare_targets(self, batched_inputs: List[Dict], padded_hw) -> Dict[str, torch.Tensor]:
        """Ground-truth masks zero-padded like the frames: masks [B, T, Hp, Wp] float, mask_valid [B, T] bool."""
        hp, wp = padded_hw
        masks, valid = [], []
        for i, clip in enumerate(batched_inputs):
            if "masks" not in clip or "mask_valid" not in clip:
                raise KeyError(
                    f"AQFormer: training clip {i} ({clip.get('video_id', '?')}) has no 'masks'/'mask_valid'"
                )
            m = clip["masks"].to(self.device, self.dtype)  # [T, H, W]
            masks.append(F.pad(m, (0, wp - m.shape[-1], 0, hp - m.shape[-2])))
            valid.append(clip["mask_valid"].to(self.device).bool())
        return {"masks": torch.stack(masks), "mask_valid": torch.stack(valid)}

    # ------------------------------------------------------------------ forward
    def forward(self, batched_inputs: List[Dict]):
        for i, clip in enumerate(batched_inputs):
            self._check_clip(i, clip)
        images = self.preprocess_images(batched_inputs)  # [B*T, 3, Hp, Wp]
        audio = self.pathway_audio(batched_inputs, self.encode_audio(batched_inputs))  # pathway -> [B, T, C_a]
        # abti_audio only when it differs, so a registered pixel decoder without that argument still works.
        abti_audio = None if audio["abti"] is audio["pixel"] else audio["abti"]
        outputs = self.decode(images.tensor, audio["pixel"], abti_audio=abti_audio, query_audio=audio["query"])

        if self.training:
            return self.losses(outputs, images, batched_inputs)
        return self.inference(outputs, images, batched_inputs)

    def losses(self, outputs: Dict, images: ImageList, batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        """Training: the criterion on the decoder outputs and the clips' padded ground truth."""
        targets = self.prepare_targets(batched_inputs, images.tensor.shape[-2:])
        return self.criterion(outputs, targets["masks"], targets["mask_valid"])

    def inference(self, outputs: Dict, images: ImageList, batched_inputs: List[Dict]) -> List[Dict]:
        """Inference: one output dict per clip (:meth:`postprocess`)."""
        return self.postprocess(outputs["pred_masks"], images, batched_inputs)

    def decode(self, frames: torch.Tensor, audio: torch.Tensor, *, abti_audio: Optional[torch.Tensor] = None,
               query_audio: Optional[torch.Tensor] = None) -> Dict:
        """Backbone, pixel decoder and transformer decoder on tensors (also the ONNX export's path).

        Args:
            frames: normalised frames, [B*T, 3, Hp, Wp] (Hp, Wp multiples of the size divisibility).
            audio: audio features A, [B, T, C_a] (every pathway, unless one of the next two is given).
            abti_audio: [B, T, C_a] audio for ABTI (eq. 9) only, audio-pathway attribution; default ``audio``.
            query_audio: [B, T, C_a] audio for the queries (A^0, eq. 7) only; default ``audio``.

        Returns:
            the transformer decoder's output dict ("pred_masks" [B, T, Hp/4, Wp/4], ...).
        """
        features = self.backbone(frames)  # name -> [B*T, C_i, H_i, W_i]
        abti_kw = {} if abti_audio is None else {"abti_audio": abti_audio}
        mask_features, multi_scale = self.pixel_decoder(features, audio, **abti_kw)
        return self.predictor(multi_scale, mask_features, audio if query_audio is None else query_audio)

    def upsample_logits(self, mask_logits: torch.Tensor, padded_hw) -> torch.Tensor:
        """Eq. (6) logits [B, T, H4, W4] -> bilinear to the padded input size [B, T, Hp, Wp]."""
        return F.interpolate(mask_logits, size=tuple(padded_hw), mode="bilinear", align_corners=False)

    def postprocess(self, mask_logits: torch.Tensor, images: ImageList, batched_inputs: List[Dict]):
        """Eq. (6) output -> per-clip probabilities at the original size.

        mask_logits: [B, T, H4, W4] -> upsampled to the padded size [B, T, Hp, Wp], cropped to each
        clip's input size, resized to (height, width), then sigmoid.
        """
        padded = self.upsample_logits(mask_logits, images.tensor.shape[-2:])  # [B, T, Hp, Wp]
        results = []
        for b, clip in enumerate(batched_inputs):
            h, w = images.image_sizes[b * self.num_frames]
            logits = padded[b, :, :h, :w]  # [T, h, w]
            out_h, out_w = clip.get("height", h), clip.get("width", w)
            if (out_h, out_w) != (h, w):
                logits = F.interpolate(logits[None], size=(out_h, out_w), mode="bilinear", align_corners=False)[0]
            results.append({"sound_probs": logits.sigmoid()})
        return results
