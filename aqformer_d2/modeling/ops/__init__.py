"""Operators of the model, one public entry each; each picks its fastest correct implementation inside.

- :func:`ms_deform_attn`: multi-scale deformable attention's sampling and weighted sum (Deformable DETR;
  Mask2Former's ``ms_deform_attn_core_pytorch`` semantics).
- :func:`linear`: act(x W^T + b), on oneDNN's inner product where that is faster on the CPU.

The literal, slow form of each is in :mod:`.reference`, for tests and comparisons. This package is the bottom
of ``aqformer_d2.modeling``: it imports only torch (docs/architecture.md, "Layers and imports").
"""
from . import reference
from .linear_op import linear, linear_backend
from .ms_deform_attn_op import ms_deform_attn, ms_deform_attn_variant

__all__ = ["linear", "linear_backend", "ms_deform_attn", "ms_deform_attn_variant", "reference"]
