"""The backbone builder: detectron2's ``build_backbone`` with an error that lists the registered names."""
from typing import Optional

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from ...utils.registry import lookup

__all__ = ["build_aq_backbone"]


def build_aq_backbone(cfg, input_shape: Optional[ShapeSpec] = None) -> Backbone:
    """Build the backbone named by ``cfg.MODEL.BACKBONE.NAME`` in detectron2's BACKBONE_REGISTRY, called as
    ``builder(cfg, input_shape)`` (``input_shape``: ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)) by default).

    Raises:
        NotRegisteredError (a KeyError): the name is not registered; lists the registered names.
        TypeError: the builder did not return a detectron2 ``Backbone``.
    """
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
    name = cfg.MODEL.BACKBONE.NAME
    builder = lookup(BACKBONE_REGISTRY, name, config_key="MODEL.BACKBONE.NAME", what="backbone",
                     register_with="@BACKBONE_REGISTRY.register() (from detectron2.modeling)")
    backbone = builder(cfg, input_shape)
    if not isinstance(backbone, Backbone):
        raise TypeError(f"MODEL.BACKBONE.NAME = {name!r} built a {type(backbone).__name__}, not a detectron2 Backbone")
    return backbone
