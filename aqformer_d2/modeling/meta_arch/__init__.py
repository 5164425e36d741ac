from .aqformer import AQFormer

__all__ = ["AQFormer"]
