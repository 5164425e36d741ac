"""The model builder: detectron2's ``build_model`` with an error that lists the registered names."""
from torch import nn

from detectron2.modeling import META_ARCH_REGISTRY, build_model

from ...utils.registry import lookup

__all__ = ["build_aq_model"]


def build_aq_model(cfg) -> nn.Module:
    """Build the meta-architecture named by ``cfg.MODEL.META_ARCHITECTURE`` on ``cfg.MODEL.DEVICE``
    (detectron2's ``build_model``, after checking the name).

    Raises:
        NotRegisteredError (a KeyError): the name is not registered; lists the registered names.
    """
    lookup(META_ARCH_REGISTRY, cfg.MODEL.META_ARCHITECTURE, config_key="MODEL.META_ARCHITECTURE",
           what="meta-architecture", register_with="@META_ARCH_REGISTRY.register() (from detectron2.modeling)")
    return build_model(cfg)
