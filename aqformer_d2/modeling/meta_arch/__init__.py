from .aqformer import AQFormer
from .build import build_aq_model

__all__ = ["AQFormer", "build_aq_model"]
