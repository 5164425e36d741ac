"""The AQFormer pixel decoder (§3.2 with ABTI of §3.4), registered as ``AQPixelDecoder``.

Data flow (scales numbered as in ABTI_POSITIONS: 1 = stride 32, 2 = 16, 3 = 8, 4 = stride 4):

    V^1..V^3 --eq.(1)-(2)--> M^1..M^3 --deformable encoder--> M̂^1..M̂^3 --ABTI at 1,2,3--> multi_scale_features
    V^4 --lateral 1x1 conv+norm--> (+ upsampled scale-3 output) --3x3 conv+norm--> --ABTI at 4--> mask_features

Choices not fixed by the paper are recorded in docs/paper_choices.md ("Pixel decoder: ...").
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from torch import nn
from torch.nn import functional as F

from ..layers import PositionEmbeddingSine
from .abti import ABTI, ABTI_LOGIT_SCALES
from .av_cross_attention import AV_ATTN_MODES, AudioVisualCrossAttention
from .build import AQ_PIXEL_DECODER_REGISTRY
from .ms_deform_encoder import MSDeformEncoder

__all__ = ["AQPixelDecoder"]

_NUM_SCALES = 4  # strides 32, 16, 8 (encoder) and 4 (mask feature)
_NUM_ENCODER_LEVELS = _NUM_SCALES - 1


@AQ_PIXEL_DECODER_REGISTRY.register()
class AQPixelDecoder(nn.Module):
    """Audio-aware, temporally enhanced multi-scale pixel decoder of AQFormer.

    ``forward(features, audio)`` takes ``features``: dict name -> [B*T, C_i, H_i, W_i] (the 4 backbone
    scales, frames clip-major) and ``audio``: [B, T, C_a]; it returns ``(mask_features [B*T, C_f, H4, W4],
    multi_scale_features)`` with ``multi_scale_features`` a list of 3 tensors [B*T, C_f, H_l, W_l],
    lowest resolution (stride 32) first.
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: Dict[str, ShapeSpec],
        audio_dim: int,
        conv_dim: int,
        av_attn_dim: int,
        av_attn_mode: str,
        enc_layers: int,
        enc_heads: int,
        enc_points: int,
        enc_dim_feedforward: int,
        enc_dropout: float,
        norm: str,
        abti_positions: Sequence[int],
        abti_dim: int,
        abti_heads: int,
        abti_logit_scale: str = "sqrt_dim",
        fw_norm: bool = True,
    ):
        """
        Args:
            input_shape: backbone feature name -> ShapeSpec (channels, stride) of exactly 4 scales.
            audio_dim: C_a, width of the audio feature.
            conv_dim: C_f, width of every output.
            av_attn_dim: C_m of eq. (1).
            av_attn_mode: "printed" or "sigmoid", the reading of eq. (1) (docs/paper_choices.md).
            enc_layers: number of deformable-attention encoder layers.
            enc_heads: heads of the deformable attention.
            enc_points: sampling points per head and level.
            enc_dim_feedforward: FFN hidden width of the encoder.
            enc_dropout: dropout of the encoder.
            norm: detectron2 norm name ("GN", "BN", "" ...) of f_w and of the lateral / output convs.
            abti_positions: scales (1 = stride 32 ... 4 = stride 4) after which ABTI is applied.
            abti_dim: C_b of ABTI.
            abti_heads: heads of ABTI's self-attention.
            abti_logit_scale: "sqrt_dim" (eq. 9 logits divided by sqrt(C_b)) or "none" (eq. 9 as printed).
            fw_norm: follow f_w of eq. (2) by ``norm`` (True) or keep it a plain linear map (False, as
                printed). The lateral / output convolutions of the stride-4 path always use ``norm``.
        """
        super().__init__()
        if len(input_shape) != _NUM_SCALES:
            raise ValueError(
                f"AQPixelDecoder needs exactly {_NUM_SCALES} input features (strides 4/8/16/32), "
                f"got {sorted(input_shape)}"
            )
        ordered = sorted(input_shape.items(), key=lambda item: item[1].stride)  # smallest stride first
        strides = [spec.stride for _, spec in ordered]
        if any(s is None for s in strides) or len(set(strides)) != _NUM_SCALES:
            raise ValueError(f"AQPixelDecoder: input features need distinct strides, got {dict(input_shape)}")
        if conv_dim <= 0 or conv_dim % 2 != 0:
            raise ValueError(f"AQPixelDecoder: conv_dim C_f must be a positive even number, got {conv_dim}")
        if abti_logit_scale not in ABTI_LOGIT_SCALES:
            raise ValueError(
                f"AQPixelDecoder: ABTI_LOGIT_SCALE must be one of {ABTI_LOGIT_SCALES}, got {abti_logit_scale!r}"
            )
        if av_attn_mode not in AV_ATTN_MODES:
            raise ValueError(f"AQPixelDecoder: AV_ATTN_MODE must be one of {AV_ATTN_MODES}, got {av_attn_mode!r}")
        positions = [int(p) for p in abti_positions]
        if len(set(positions)) != len(positions) or any(p < 1 or p > _NUM_SCALES for p in positions):
            raise ValueError(
                f"AQPixelDecoder: ABTI_POSITIONS must be distinct values in 1..{_NUM_SCALES} "
                f"(1 = stride 32, 4 = stride 4), got {list(abti_positions)}"
            )

        self.audio_dim = audio_dim
        self.conv_dim = conv_dim
        self.mask_feature_name, mask_spec = ordered[0]
        # Encoder scales, lowest resolution first: positions 1, 2, 3.
        encoder_items = ordered[1:][::-1]
        self.encoder_feature_names = [name for name, _ in encoder_items]
        self.in_channels = {name: spec.channels for name, spec in input_shape.items()}
        self.abti_positions = sorted(positions)

        # Eq. (1)-(2), one per encoder scale.
        self.av_attn = nn.ModuleList(
            AudioVisualCrossAttention(
                spec.channels, audio_dim, av_attn_dim, conv_dim, mode=av_attn_mode, norm=norm if fw_norm else ""
            )
            for _, spec in encoder_items
        )
        self.position_embedding = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        self.level_embed = nn.Parameter(torch.empty(_NUM_ENCODER_LEVELS, conv_dim))
        nn.init.normal_(self.level_embed)
        self.encoder = MSDeformEncoder(
            enc_layers, conv_dim, enc_dim_feedforward, enc_dropout, _NUM_ENCODER_LEVELS, enc_heads, enc_points
        )
        # FPN-style path to the stride-4 mask feature (no activation: it is the linear mask embedding of eq. 6).
        self.lateral_conv = Conv2d(
            mask_spec.channels, conv_dim, kernel_size=1, bias=not norm, norm=get_norm(norm, conv_dim)
        )
        self.output_conv = Conv2d(
            conv_dim, conv_dim, kernel_size=3, padding=1, bias=not norm, norm=get_norm(norm, conv_dim)
        )
        weight_init.c2_xavier_fill(self.lateral_conv)
        weight_init.c2_xavier_fill(self.output_conv)
        # ABTI (eq. 9-12): one instance of the same class per inserted position, keyed "1".."4".
        self.abti = nn.ModuleDict(
            {
                str(p): ABTI(conv_dim, audio_dim, abti_dim, abti_heads, logit_scale=abti_logit_scale)
                for p in self.abti_positions
            }
        )

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        pd = cfg.MODEL.AQ_PIXEL_DECODER
        missing = [name for name in pd.IN_FEATURES if name not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.AQ_PIXEL_DECODER.IN_FEATURES names {missing}, which the backbone does not output "
                f"(it has {sorted(input_shape)})"
            )
        return {
            "input_shape": {name: input_shape[name] for name in pd.IN_FEATURES},
            "audio_dim": cfg.MODEL.AUDIO_ENCODER.OUT_DIM,
            "conv_dim": pd.CONVS_DIM,
            "av_attn_dim": pd.AV_ATTN_DIM,
            "av_attn_mode": pd.AV_ATTN_MODE,
            "enc_layers": pd.ENC_LAYERS,
            "enc_heads": pd.ENC_HEADS,
            "enc_points": pd.ENC_POINTS,
            "enc_dim_feedforward": pd.ENC_DIM_FEEDFORWARD,
            "enc_dropout": pd.ENC_DROPOUT,
            "norm": pd.NORM,
            "abti_positions": list(pd.ABTI_POSITIONS),
            "abti_dim": pd.ABTI_DIM,
            "abti_heads": pd.ABTI_HEADS,
            "abti_logit_scale": pd.ABTI_LOGIT_SCALE,
            "fw_norm": pd.FW_NORM,
        }

    def _check_inputs(self, features: Dict[str, torch.Tensor], audio: torch.Tensor) -> None:
        if audio.dim() != 3 or audio.shape[-1] != self.audio_dim:
            raise ValueError(f"AQPixelDecoder: audio must be [B, T, {self.audio_dim}], got {tuple(audio.shape)}")
        frames = audio.shape[0] * audio.shape[1]
        for name, channels in self.in_channels.items():
            if name not in features:
                raise KeyError(f"AQPixelDecoder: feature {name!r} missing from the input (got {sorted(features)})")
            x = features[name]
            if x.dim() != 4 or x.shape[0] != frames or x.shape[1] != channels:
                raise ValueError(
                    f"AQPixelDecoder: feature {name!r} must be [B*T={frames}, {channels}, H, W], got {tuple(x.shape)}"
                )

    def _apply_abti(self, position: int, x: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """ABTI at scale ``position`` if it is enabled there, else the identity. [B*T, C_f, H, W]."""
        key = str(position)
        return self.abti[key](x, audio) if key in self.abti else x

    def _encode(self, enhanced: List[torch.Tensor]) -> List[torch.Tensor]:
        """Deformable-attention encoder over M^1..M^3 (each [B*T, C_f, H_l, W_l], lowest resolution first);
        returns M̂^1..M̂^3 with the same shapes."""
        shapes = [(x.shape[-2], x.shape[-1]) for x in enhanced]
        src = torch.cat([x.flatten(2).transpose(1, 2) for x in enhanced], dim=1)  # [B*T, S, C_f]
        # The positional (+ level) embedding depends only on the level and the map size, not on the frame:
        # computed for one frame and broadcast over the B*T frames by the encoder's additions.
        pos = torch.cat(
            [
                (self.position_embedding(x[:1]) + self.level_embed[lvl].view(1, -1, 1, 1)).flatten(2).transpose(1, 2)
                for lvl, x in enumerate(enhanced)
            ],
            dim=1,
        )  # [1, S, C_f]
        memory = self.encoder(src, pos, shapes)  # [B*T, S, C_f]
        chunks = memory.split([h * w for h, w in shapes], dim=1)  # L x [B*T, H_l*W_l, C_f]
        return [
            chunk.transpose(1, 2).reshape(chunk.shape[0], self.conv_dim, h, w)  # [B*T, C_f, H_l, W_l]
            for chunk, (h, w) in zip(chunks, shapes)
        ]

    def _mask_feature(self, largest: torch.Tensor, finest_encoded: torch.Tensor) -> torch.Tensor:
        """FPN-style stride-4 path: output_conv(lateral(V^4) + upsample(scale-3 output)).
        largest [B*T, C_4, H4, W4], finest_encoded [B*T, C_f, H8, W8] -> [B*T, C_f, H4, W4]."""
        lateral = self.lateral_conv(largest)  # [B*T, C_f, H4, W4]
        up = F.interpolate(finest_encoded, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        return self.output_conv(lateral + up)  # [B*T, C_f, H4, W4]

    def forward(
        self, features: Dict[str, torch.Tensor], audio: torch.Tensor, abti_audio: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """features: dict name -> [B*T, C_i, H_i, W_i]; audio: [B, T, C_a], the A of eq. (1)-(2) and, unless
        ``abti_audio`` is given, of ABTI (eq. 9). ``abti_audio``: [B, T, C_a], a separate audio feature for ABTI
        only (audio-pathway attribution, docs/interfaces.md); None: ABTI uses ``audio``.

        Returns:
            (mask_features [B*T, C_f, H4, W4], [M̂^1 (stride 32), M̂^2 (16), M̂^3 (8)] each [B*T, C_f, H_l, W_l]).
        """
        self._check_inputs(features, audio)
        if abti_audio is None:
            abti_audio = audio
        elif abti_audio.shape != audio.shape:
            raise ValueError(
                f"AQPixelDecoder: abti_audio must have the shape of audio {tuple(audio.shape)}, got {tuple(abti_audio.shape)}"
            )
        enhanced = [
            attn(features[name], audio) for attn, name in zip(self.av_attn, self.encoder_feature_names)
        ]  # eq. (1)-(2): 3 x [B*T, C_f, H_l, W_l]
        encoded = self._encode(enhanced)  # 3 x [B*T, C_f, H_l, W_l]
        multi_scale = [self._apply_abti(i + 1, x, abti_audio) for i, x in enumerate(encoded)]
        mask_features = self._mask_feature(features[self.mask_feature_name], multi_scale[-1])  # [B*T, C_f, H4, W4]
        mask_features = self._apply_abti(_NUM_SCALES, mask_features, abti_audio)
        return mask_features, multi_scale
