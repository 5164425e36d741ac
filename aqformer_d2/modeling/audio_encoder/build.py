"""Registry of audio encoders (§3.1) and the cfg-driven builder."""
from detectron2.utils.registry import Registry
from torch import nn

from ...utils.registry import lookup

__all__ = ["AUDIO_ENCODER_REGISTRY", "build_audio_encoder"]

AUDIO_ENCODER_REGISTRY = Registry("AQ_AUDIO_ENCODER")
AUDIO_ENCODER_REGISTRY.__doc__ = """
Audio encoders: modules mapping VGGish log-mel examples [N, 1, 96, 64] to features [N, C_a].
Each registered object is called with ``obj(cfg)`` and must expose ``out_dim`` (C_a).
"""


def build_audio_encoder(cfg) -> nn.Module:
    """Build the audio encoder named by ``cfg.MODEL.AUDIO_ENCODER.NAME``."""
    name = cfg.MODEL.AUDIO_ENCODER.NAME
    encoder = lookup(AUDIO_ENCODER_REGISTRY, name, config_key="MODEL.AUDIO_ENCODER.NAME", what="audio encoder",
                     register_with="@AUDIO_ENCODER_REGISTRY.register() (from aqformer_d2.modeling.audio_encoder)")
    return encoder(cfg)
