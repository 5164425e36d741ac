"""AQFormer pixel decoder (§3.2, §3.4): eq. (1)-(2) audio-visual cross-attention, a multi-scale
deformable-attention encoder, an FPN-style path to the stride-4 mask feature, and ABTI (eq. 9-12).

Importing this package registers ``AQPixelDecoder`` in ``AQ_PIXEL_DECODER_REGISTRY``.
"""
from .abti import ABTI
from .aq_pixel_decoder import AQPixelDecoder
from .av_cross_attention import AudioVisualCrossAttention, eq1_audio_visual_attention
from .build import AQ_PIXEL_DECODER_REGISTRY, build_aq_pixel_decoder
from .ms_deform_attn import MSDeformAttn
from .ms_deform_encoder import MSDeformEncoder, MSDeformEncoderLayer

__all__ = [
    "ABTI",
    "AQPixelDecoder",
    "AQ_PIXEL_DECODER_REGISTRY",
    "AudioVisualCrossAttention",
    "MSDeformAttn",
    "MSDeformEncoder",
    "MSDeformEncoderLayer",
    "build_aq_pixel_decoder",
    "eq1_audio_visual_attention",
]
