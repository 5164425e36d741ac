"""AQFormer modeling: importing this package registers the backbones, audio encoder, pixel decoder,
transformer decoders and the "AQFormer" and "AQFormerSemantic" meta-architectures."""
from . import audio_encoder, backbone, pixel_decoder, transformer_decoder  # noqa: F401  (registration)
from .backbone import tiny_convnet  # noqa: F401  (registration)
from .backbone import build_aq_backbone
from .meta_arch import AQFormer, AQFormerSemantic, build_aq_model

__all__ = ["AQFormer", "AQFormerSemantic", "build_aq_backbone", "build_aq_model"]
