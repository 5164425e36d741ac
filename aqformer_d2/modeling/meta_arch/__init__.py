from .aqformer import AQFormer
from .aqformer_semantic import AQFormerSemantic, semantic_inference
from .build import build_aq_model

__all__ = ["AQFormer", "AQFormerSemantic", "build_aq_model", "semantic_inference"]
