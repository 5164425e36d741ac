"""Layers of the audio-queried transformer decoder (paper §3.3, eq. 3-6).

One place per equation:

* eq. (3) ``X^l = LN(MHCA(A^{l-1}, M̂^l)) + A^{l-1}``   -> :class:`CrossAttentionLayer`
* eq. (4) ``X̄^l = LN(MHSA(X^l)) + X^l``                 -> :class:`SelfAttentionLayer`
* eq. (5) ``A^l = LN(FFN(X̄^l)) + X̄^l``                  -> the shared :class:`~aqformer_d2.modeling.layers.FFNLayer`
  with ``norm_position="branch"`` (composed in :class:`AQDecoderLayer`)
* eq. (6) ``Ŷ_t = σ(M̂^4_t ⊗ (A_t)^T)`` (before σ)        -> :func:`predict_masks` (all layers at once: :func:`predict_masks_of_layers`)

Shapes: B clips, T frames per clip, C = C_f, HW = H_l * W_l pixels of one frame at scale l. Frames are
flattened clip-major (index ``b * T + t``), as everywhere in the project.
"""
import torch
from torch import nn

from ..layers import FFNLayer
from ..layers.attention import multihead_attention

__all__ = [
    "CROSS_ATTN_SCOPES",
    "CrossAttentionLayer",
    "SelfAttentionLayer",
    "AQDecoderLayer",
    "predict_masks",
    "predict_masks_of_layers",
]

# "all": each query of a clip attends to the keys of all T frames (the paper);
# "own": query t attends to frame t only (Table 2a, "Audio Query†").
CROSS_ATTN_SCOPES = ("all", "own")


def _check_heads(d_model: int, nhead: int, who: str) -> None:
    if nhead < 1 or d_model % nhead != 0:
        raise ValueError(f"{who}: d_model ({d_model}) must be a positive multiple of nhead ({nhead})")


def _reset_attention_parameters(module: nn.Module) -> None:
    """Xavier-uniform initialisation of every weight matrix (as DETR / Mask2Former do)."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class CrossAttentionLayer(nn.Module):
    """Eq. (3): ``X^l = LN(MHCA(A^{l-1}, M̂^l)) + A^{l-1}`` (LayerNorm on the branch, as printed).

    Queries are the per-frame queries of a clip, Q = 1 per frame in the paper (N per frame in the AVSS
    head, frame-major: query index t * N + n); keys/values are the pixels of one decoder scale.
    With scope "all" a query of frame t of clip b attends over the T * H_l * W_l pixels of every frame of
    clip b; with scope "own" it attends over the H_l * W_l pixels of frame t only (Audio Query†). The scope
    is implemented by reshaping (no attention mask): "all" groups the frames of a clip into one key
    sequence, "own" makes every frame its own attention batch with its N queries.

    Positional information (sine + level embedding) is added to the keys only; the values are the raw
    visual features M̂^l. No positional embedding is added to the queries (eq. 3 has none; see
    docs/paper_choices.md).

    Args:
        d_model: C_f, width of queries and features.
        nhead: attention heads.
        dropout: dropout on the attention weights and on the branch output.
        scope: "all" or "own", see above.
    """

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, scope: str = "all"):
        super().__init__()
        _check_heads(d_model, nhead, "CrossAttentionLayer")
        if scope not in CROSS_ATTN_SCOPES:
            raise ValueError(f"CrossAttentionLayer: scope must be one of {CROSS_ATTN_SCOPES}, got {scope!r}")
        self.scope = scope
        self.attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        _reset_attention_parameters(self.attn)

    def forward(
        self, queries: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor, queries_per_frame: int = 1
    ) -> torch.Tensor:
        """
        Args:
            queries: A^{l-1}, [B, T*N, C] (N = queries_per_frame; [B, T, C] for the paper's N = 1).
            memory: M̂^l flattened per frame, [B*T, HW, C] (the values).
            memory_pos: positional + level embedding of the keys, broadcastable to memory
                ([1, HW, C] or [B*T, HW, C]).
            queries_per_frame: N >= 1.

        Returns:
            X^l, [B, T*N, C].
        """
        batch, num_queries, channels = queries.shape
        if queries_per_frame < 1 or num_queries % queries_per_frame != 0:
            raise ValueError(
                f"CrossAttentionLayer: {num_queries} queries per clip are not a multiple of "
                f"queries_per_frame={queries_per_frame}"
            )
        frames = num_queries // queries_per_frame
        if memory.dim() != 3 or memory.shape[0] != batch * frames or memory.shape[2] != channels:
            raise ValueError(
                f"CrossAttentionLayer: memory must be [B*T={batch * frames}, HW, C={channels}], "
                f"got {tuple(memory.shape)}"
            )
        keys = memory + memory_pos  # [B*T, HW, C]
        pixels = memory.shape[1]
        if self.scope == "all":
            # [B*T, HW, C] -> [B, T*HW, C]: one key sequence per clip (frame-major inside the clip)
            keys = keys.reshape(batch, frames * pixels, channels)
            values = memory.reshape(batch, frames * pixels, channels)
            attn_queries = queries  # [B, T*N, C]
        else:
            # each frame is an attention batch of its own: its N queries [B*T, N, C] against [B*T, HW, C]
            values = memory
            attn_queries = queries.reshape(batch * frames, queries_per_frame, channels)
        out = multihead_attention(self.attn, attn_queries, keys, values)  # [B, T*N, C] or [B*T, N, C]
        out = out.reshape(batch, num_queries, channels)  # "own": [B*T, N, C] -> [B, T*N, C]
        return queries + self.norm(self.dropout(out))


class SelfAttentionLayer(nn.Module):
    """Eq. (4): ``X̄^l = LN(MHSA(X^l)) + X^l`` among all queries of each clip (the T of the paper; the T*N of
    the AVSS head, across frames as in the paper), no positional embedding.

    Args:
        d_model: C_f.
        nhead: attention heads.
        dropout: dropout on the attention weights and on the branch output.
    """

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0):
        super().__init__()
        _check_heads(d_model, nhead, "SelfAttentionLayer")
        self.attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        _reset_attention_parameters(self.attn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: X^l, [B, Q, C] -> X̄^l, [B, Q, C] (Q = T, or T*N)."""
        out = self.attn(x, x, x, need_weights=False)[0]
        return x + self.norm(self.dropout(out))


class AQDecoderLayer(nn.Module):
    """One decoder layer l: eq. (3) cross-attention, eq. (4) self-attention, eq. (5) FFN, in this order.

    Eq. (5) ``A^l = LN(FFN(X̄^l)) + X̄^l`` is the shared FFNLayer with ``norm_position="branch"``.

    Args:
        d_model: C_f.
        nhead: attention heads.
        dim_feedforward: hidden width of the FFN.
        dropout: dropout of all three blocks.
        scope: cross-attention scope, "all" or "own".
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.0, scope: str = "all"):
        super().__init__()
        self.cross_attn = CrossAttentionLayer(d_model, nhead, dropout=dropout, scope=scope)
        self.self_attn = SelfAttentionLayer(d_model, nhead, dropout=dropout)
        self.ffn = FFNLayer(d_model, dim_feedforward, dropout=dropout, activation="relu", norm_position="branch")

    def forward(
        self, queries: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor, queries_per_frame: int = 1
    ) -> torch.Tensor:
        """queries A^{l-1} [B, T*N, C] (N = queries_per_frame, 1 in the paper); memory [B*T, HW, C]; memory_pos
        broadcastable to memory -> A^l [B, T*N, C]."""
        x = self.cross_attn(queries, memory, memory_pos, queries_per_frame)  # eq. (3)
        x = self.self_attn(x)  # eq. (4)
        return self.ffn(x)  # eq. (5)


MASK_EMBED_TYPES = ("plain", "norm_mlp")


class MaskEmbed(nn.Module):
    """What multiplies M̂^4 in eq. (6): the query A^l itself ("plain", eq. 6 as printed) or
    ``MLP(LN(A^l))`` ("norm_mlp": LayerNorm then a 3-layer MLP, the Mask2Former practice the paper says
    it follows). See docs/paper_choices.md ("Eq. 6: mask embedding") for why both exist.

    Args:
        dim: C_f.
        mode: "plain" or "norm_mlp".
    """

    def __init__(self, dim: int, mode: str = "norm_mlp"):
        super().__init__()
        if mode not in MASK_EMBED_TYPES:
            raise ValueError(f"MaskEmbed: MASK_EMBED must be one of {MASK_EMBED_TYPES}, got {mode!r}")
        self.mode = mode
        if mode == "norm_mlp":
            self.norm = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim),
                                     nn.ReLU(inplace=True), nn.Linear(dim, dim))

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        """queries: A^l, [B, T, C] -> mask embedding [B, T, C]."""
        if self.mode == "plain":
            return queries
        return self.mlp(self.norm(queries))


def predict_masks(mask_features: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Eq. (6) before the sigmoid: ``logits_t = M̂^4_t ⊗ (A_t)^T``, a plain per-frame dot product over C_f.

    ``queries`` is the query A^l or its :class:`MaskEmbed` (MODEL.AQ_TRANSFORMER_DECODER.MASK_EMBED).

    Args:
        mask_features: M̂^4, [B*T, C, H4, W4].
        queries: A^l, [B, T, C].

    Returns:
        mask logits, [B, T, H4, W4] (consumers apply the sigmoid).
    """
    return predict_masks_of_layers(mask_features, queries[None])[0]


def predict_masks_of_layers(mask_features: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Eq. (6) for the queries of L decoder layers at once: one batched product with L columns.

    Args:
        mask_features: M̂^4, [B*T, C, H4, W4].
        queries: [L, B, T, C], the (mask-embedded) query of every layer.

    Returns:
        mask logits, [L, B, T, H4, W4]; entry l is :func:`predict_masks` of ``queries[l]``.

    Each frame has one query per layer, so a product per layer would be a matrix-vector product, and
    its backward would write one dense [B*T, H4*W4, C] gradient per layer; with the L layers as the
    columns of one product the backward writes one (bench/README.md, "A faster main job").
    """
    if queries.dim() != 4:
        raise ValueError(f"predict_masks: queries must be [L, B, T, C], got {tuple(queries.shape)}")
    layers, batch, num_frames, channels = queries.shape
    if mask_features.dim() != 4 or mask_features.shape[0] != batch * num_frames or mask_features.shape[1] != channels:
        raise ValueError(
            f"predict_masks: mask_features must be [B*T={batch * num_frames}, C={channels}, H4, W4], "
            f"got {tuple(mask_features.shape)}"
        )
    height, width = mask_features.shape[-2:]
    tokens = mask_features.flatten(2).transpose(1, 2)  # [B*T, H4*W4, C], a view for channels-last features
    per_frame = queries.permute(1, 2, 3, 0).reshape(batch * num_frames, channels, layers)  # [B*T, C, L]
    logits = torch.bmm(tokens, per_frame)  # [B*T, H4*W4, L]
    return logits.permute(2, 0, 1).reshape(layers, batch, num_frames, height, width)  # [L, B, T, H4, W4]
