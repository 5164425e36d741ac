"""Registry and builder of the AQFormer pixel decoder (§3.2)."""
from typing import Dict

from detectron2.layers import ShapeSpec
from detectron2.utils.registry import Registry
from torch import nn

from ...utils.registry import lookup

__all__ = ["AQ_PIXEL_DECODER_REGISTRY", "build_aq_pixel_decoder"]

AQ_PIXEL_DECODER_REGISTRY = Registry("AQ_PIXEL_DECODER")
AQ_PIXEL_DECODER_REGISTRY.__doc__ = """
Registry for AQFormer pixel decoders. A registered class is called as ``cls(cfg, input_shape)`` with
``input_shape`` a dict backbone feature name -> ShapeSpec, and its module is called as
``decoder(features, audio) -> (mask_features, multi_scale_features)`` (see docs/interfaces.md).
"""


def build_aq_pixel_decoder(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """Build the pixel decoder named by ``cfg.MODEL.AQFORMER.PIXEL_DECODER_NAME``."""
    name = cfg.MODEL.AQFORMER.PIXEL_DECODER_NAME
    decoder_cls = lookup(AQ_PIXEL_DECODER_REGISTRY, name, config_key="MODEL.AQFORMER.PIXEL_DECODER_NAME",
                         what="pixel decoder",
                         register_with="@AQ_PIXEL_DECODER_REGISTRY.register() (from aqformer_d2.modeling.pixel_decoder)")
    model = decoder_cls(cfg, input_shape)
    if not callable(getattr(model, "forward", None)):
        raise TypeError(f"pixel decoder {name!r} has no forward method")
    return model
