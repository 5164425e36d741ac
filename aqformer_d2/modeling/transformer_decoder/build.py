"""Registry and builder of the audio-queried transformer decoder (paper §3.3)."""
from detectron2.utils.registry import Registry

from ...utils.registry import lookup

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
    decoder_cls = lookup(AQ_TRANSFORMER_DECODER_REGISTRY, name, config_key="MODEL.AQFORMER.TRANSFORMER_DECODER_NAME",
                         what="transformer decoder",
                         register_with="@AQ_TRANSFORMER_DECODER_REGISTRY.register() (from aqformer_d2.modeling.transformer_decoder)")
    return decoder_cls(cfg)
