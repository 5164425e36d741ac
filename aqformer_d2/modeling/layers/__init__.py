"""Small building blocks shared by the pixel decoder and the transformer decoder."""
from .ffn import FFNLayer
from .linear import Linear
from .position_encoding import PositionEmbeddingSine

__all__ = ["FFNLayer", "Linear", "PositionEmbeddingSine"]
