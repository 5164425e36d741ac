"""Registry and builder of the audio-queried transformer decoder (paper §3.3)."""
from detectron2.utils.registry import Registry

__all__ = ["AQ_TRANSFORMER_DECODER_REGISTRY", "build_aq_transformer_decoder"]

AQ_TRANSFORMER_DECODER_REGISTRY = Registry("AQ_TRANSFORMER_DECODER")
AQ_TRANSFORMER_DECODER_REGISTRY.__doc__ = """
Registry for AQFormer transformer decoders. A registered class is called as
``cls(cfg)`` and its module maps ``(multi_scale_features, mask_features, audio)`` to the output dict
described in docs/interfaces.md ("Transformer decoder").
"""


def build_aq_transformer_decoder(cfg):
    """Build the transformer decoder named by ``cfg.MODEL.AQFORMER.TRANSFORMER_DECODER_NAME``."""
    name = cfg.MODEL.AQFORMER.TRANSFORMER_DECODER_NAME
    return AQ_TRANSFORMER_DECODER_REGISTRY.get(name)(cfg)
