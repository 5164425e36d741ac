"""AQFormer (Huang et al., IJCAI 2023) as a detectron2 plugin.

Importing this package registers every component (backbones, audio encoder, pixel decoder,
transformer decoder, meta-architecture, dataset mappers, datasets) in its registry.
"""
from . import compat  # noqa: F401  (must precede any detectron2.layers import)
from .config import add_aqformer_config

__all__ = ["add_aqformer_config"]
__version__ = "0.1.0"
