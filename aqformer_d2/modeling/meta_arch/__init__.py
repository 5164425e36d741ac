from .aqformer import AQFormer
from .aqformer_semantic import AQFormerSemantic, semantic_inference

__all__ = ["AQFormer", "AQFormerSemantic", "semantic_inference"]
