"""Multi-head attention computed from an ``nn.MultiheadAttention``'s parameters, with the input
projections by :func:`aqformer_d2.modeling.ops.linear`.

``nn.MultiheadAttention`` projects keys and values with ``F.linear`` (the BLAS on the CPU); for the
decoder's cross-attention over T x H x W pixels that projection is most of the layer's work, and
:func:`~aqformer_d2.modeling.ops.linear` runs it on oneDNN where that is faster (bench/README.md). The
module keeps its parameters (``in_proj_weight``, ``in_proj_bias``, ``out_proj``), so checkpoints are
unchanged; only the call differs.
"""
import torch
from torch import nn
from torch.nn import functional as F

from ..ops import linear

__all__ = ["multihead_attention"]


def multihead_attention(attn: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor,
                        value: torch.Tensor) -> torch.Tensor:
    """``attn(query, key, value, need_weights=False)[0]`` for a batch-first module without masks.

    Args:
        attn: the module (``batch_first=True``, packed in-projection, no bias_k/bias_v, no add_zero_attn).
        query: [B, Lq, C]; key, value: [B, Lk, C].

    Returns:
        [B, Lq, C]: softmax((Q W_q + b_q)(K W_k + b_k)^T / sqrt(C / heads)) (V W_v + b_v) per head, then
        the output projection; dropout on the attention weights in training mode, as the module does.
    """
    if not attn.batch_first or not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn:
        raise ValueError("multihead_attention: only batch-first modules with a packed in-projection, without "
                         "bias_k/bias_v or add_zero_attn, are supported")
    b, lq, c = query.shape
    lk = key.shape[1]
    heads = attn.num_heads
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)  # [C, C] each
    b_q, b_k, b_v = attn.in_proj_bias.chunk(3) if attn.in_proj_bias is not None else (None, None, None)
    q = linear(query, w_q, b_q).view(b, lq, heads, c // heads).transpose(1, 2)  # [B, heads, Lq, C/heads]
    k = linear(key, w_k, b_k).view(b, lk, heads, c // heads).transpose(1, 2)  # [B, heads, Lk, C/heads]
    v = linear(value, w_v, b_v).view(b, lk, heads, c // heads).transpose(1, 2)  # [B, heads, Lk, C/heads]
    dropout = attn.dropout if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)  # [B, heads, Lq, C/heads]
    out = out.transpose(1, 2).reshape(b, lq, c)  # [B, Lq, C]
    return attn.out_proj(out)  # [B, Lq, C]
