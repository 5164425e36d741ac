"""Audio Bridged Temporal Interaction (ABTI), eq. (9)-(12) of AQFormer (§3.4).

One class, :class:`ABTI`, instantiated once per scale it is inserted at. Three steps:

1. gathering (eq. 9-10): the audio of frame p selects, by a softmax over the HW pixels of frame q,
   a compact object feature O_pq from frame q, for every pair (p, q) of the clip;
2. temporal interaction: multi-head self-attention (residual + LayerNorm) over the T x T compact
   features of the clip gives Ô_pq;
3. remapping (eq. 11-12): Ô_pq is spread back over frame q with the same weights S_pq and the
   contributions of all p are added to F_q.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import nn

from ..layers.linear import Linear

__all__ = ["ABTI", "ABTI_LOGIT_SCALES", "LinearMapWeight"]

# Temperature of eq. (9): "sqrt_dim" divides the logits by sqrt(C_b) (scaled dot-product attention, our
# default); "none" is eq. (9) as printed. See docs/paper_choices.md, "ABTI: scaling of eq. (9)".
ABTI_LOGIT_SCALES = ("sqrt_dim", "none")


class LinearMapWeight(nn.Module):
    """The weight W [out_features, in_features] of a bias-free linear map f(x) = x W^T that is only used
    through W, applied to the other operand of a product (so it has no forward). Parameter, state-dict key
    (``weight``) and default initialisation are those of ``nn.Linear(in_features, out_features, bias=False)``."""

    def __init__(self, out_features: int, in_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default initialisation


class ABTI(nn.Module):
    """Audio-bridged temporal interaction for one scale.

    By default the logits of eq. (9) are scaled by 1/sqrt(C_b), which the paper does not print
    (``logit_scale="none"`` gives the printed form; see docs/paper_choices.md, "ABTI: scaling of eq. (9)").

    Args:
        feature_dim: C, channels of F (C_f in the pixel decoder).
        audio_dim: C_a, channels of A.
        hidden_dim: C_b, width of f_a, f_m, f_n and of the compact features.
        num_heads: heads of the self-attention over the T x T compact features (must divide C_b).
        dropout: dropout of that self-attention.
        logit_scale: "sqrt_dim" (logits of eq. 9 divided by sqrt(C_b)) or "none" (eq. 9 as printed).
    """

    def __init__(self, feature_dim: int, audio_dim: int, hidden_dim: int, num_heads: int, dropout: float = 0.0,
                 logit_scale: str = "sqrt_dim"):
        super().__init__()
        for name, val in (("feature_dim", feature_dim), ("audio_dim", audio_dim), ("hidden_dim", hidden_dim),
                          ("num_heads", num_heads)):
            if val <= 0:
                raise ValueError(f"ABTI: {name} must be positive, got {val}")
        if hidden_dim % num_heads != 0:
            raise ValueError(f"ABTI: hidden_dim C_b ({hidden_dim}) must be divisible by num_heads ({num_heads})")
        if logit_scale not in ABTI_LOGIT_SCALES:
            raise ValueError(f"ABTI: logit_scale must be one of {ABTI_LOGIT_SCALES}, got {logit_scale!r}")
        self.feature_dim = feature_dim
        self.audio_dim = audio_dim
        self.hidden_dim = hidden_dim
        self.logit_scale = logit_scale
        # Multiplier of the eq. (9) logits: 1/sqrt(C_b), or 1 for the printed form.
        self.logit_multiplier = 1.0 / math.sqrt(hidden_dim) if logit_scale == "sqrt_dim" else 1.0
        self.f_a = Linear(audio_dim, hidden_dim)
        # f_m(F) = F W_m^T enters eq. (9) only through W_m (see gather), so only W_m [C_b, C] is kept. No bias:
        # f_a(A_p) . b would add the same value to every pixel's logit, which the softmax over HW cancels.
        self.f_m = LinearMapWeight(hidden_dim, feature_dim)
        self.f_n = Linear(feature_dim, hidden_dim)
        self.f_o = Linear(hidden_dim, feature_dim)
        self.self_attn = nn.MultiheadAttention(hidden_dim, num_heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(hidden_dim)
        for layer in (self.f_a, self.f_m, self.f_n, self.f_o):
            nn.init.xavier_uniform_(layer.weight)
        for layer in (self.f_a, self.f_n, self.f_o):
            nn.init.zeros_(layer.bias)

    @property
    def w_m(self) -> torch.Tensor:
        """W_m [C_b, C], the weight of f_m in eq. (9): f_m(F_q) = F_q W_m^T (state-dict key ``f_m.weight``)."""
        return self.f_m.weight

    def gather(self, audio: torch.Tensor, frames: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Eq. (9)-(10): S_pq = Softmax_HW(s * f_a(A_p) f_m(F_q)^T); O_pq = S_pq f_n(F_q), with
        s = 1/sqrt(C_b) ("sqrt_dim") or 1 ("none", as printed).

        Computed re-associated, so that no C x C_b product runs per pixel (the same arithmetic up to
        round-off; tests/modeling/pixel_decoder/test_abti.py checks it against the equations as printed):

        - eq. (9): f_m has no bias, so f_a(A_p) f_m(F_q)^T = (f_a(A_p) W_m) F_q^T: the audio side is
          mapped into the C feature channels once per frame ([T, C_b] x [C_b, C]) and the logits are one
          product of every pixel with the T audio rows;
        - eq. (10): each row of S_pq sums to 1 over the pixels, so S_pq f_n(F_q) = (S_pq F_q) W_n^T + b_n:
          the pixels are pooled first ([T, HW] x [HW, C] per frame q) and f_n maps T x T pooled rows.

        Args:
            audio: A, [B, T, C_a].
            frames: F as tokens, [B, T, HW, C].

        Returns:
            (S [B, T(p), T(q), HW], each row summing to 1 over HW; O [B, T(p), T(q), C_b]).
            S is a permuted view of storage laid out [B, T(q), HW, T(p)], the layout the pooling of
            eq. (10) and the remapping of eq. (11) read directly.
        """
        b, t, hw, c = frames.shape
        tokens = frames.reshape(b * t, hw, c)  # [B*T(q), HW, C] (a view for NHWC features)
        # (s * f_a(A_p)) W_m: [B, T(p), C_b] x [C_b, C] -> [B, T(p), C]
        audio_keys = (self.f_a(audio) * self.logit_multiplier) @ self.w_m
        audio_keys = audio_keys.transpose(1, 2)[:, None].expand(b, t, c, t).reshape(b * t, c, t)  # [B*T(q), C, T(p)]
        logits = torch.bmm(tokens, audio_keys)  # [B*T(q), HW, T(p)]
        s = logits.view(b, t, hw, t).softmax(dim=2)  # [B, T(q), HW, T(p)], softmax over the pixels of frame q
        pooled = torch.bmm(s.view(b * t, hw, t).transpose(1, 2), tokens)  # [B*T(q), T(p), C] = S_pq F_q
        o = self.f_n(pooled).view(b, t, t, -1).transpose(1, 2)  # [B, T(p), T(q), C_b]
        return s.permute(0, 3, 1, 2), o.contiguous()  # [B, T(p), T(q), HW] (a view), [B, T(p), T(q), C_b]

    def interact(self, compact: torch.Tensor) -> torch.Tensor:
        """Temporal interaction: Ô = LN(O + MHSA(O)) over the sequence of all T x T compact features.

        compact: O, [B, T, T, C_b] -> Ô, [B, T, T, C_b].
        """
        b, t, _, c = compact.shape
        seq = compact.reshape(b, t * t, c)  # [B, T*T, C_b]
        attended, _ = self.self_attn(seq, seq, seq, need_weights=False)  # [B, T*T, C_b]
        return self.norm(seq + attended).view(b, t, t, c)  # [B, T, T, C_b]

    def remap(self, frames: torch.Tensor, weights: torch.Tensor, updated: torch.Tensor) -> torch.Tensor:
        """Eq. (11)-(12): F̃_pq = S_pq^T f_o(Ô_pq); F̂_q = F_q + sum_p F̃_pq.

        Args:
            frames: F as tokens, [B, T, HW, C].
            weights: S, [B, T(p), T(q), HW].
            updated: Ô, [B, T(p), T(q), C_b].

        Returns:
            F̂ as tokens, [B, T, HW, C].
        """
        b, t, hw, c = frames.shape
        # sum_p S_pq^T f_o(Ô_pq): the outer products [HW, 1] x [1, C] summed over p are one product
        # [HW, T(p)] x [T(p), C] per frame q, added to F_q in the same call.
        weights_qnp = weights.permute(0, 2, 3, 1).reshape(b * t, hw, t)  # [B*T(q), HW, T(p)] (a view for gather's S)
        contrib = self.f_o(updated).transpose(1, 2).reshape(b * t, t, c)  # [B*T(q), T(p), C]
        out = torch.baddbmm(frames.reshape(b * t, hw, c), weights_qnp, contrib)  # [B*T(q), HW, C]
        return out.view(b, t, hw, c)  # [B, T, HW, C]

    def forward(self, features: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """features F [B*T, C, H, W] (clip-major), audio A [B, T, C_a] -> F̂ [B*T, C, H, W]."""
        if features.dim() != 4 or features.shape[1] != self.feature_dim:
            raise ValueError(f"ABTI: features must be [B*T, {self.feature_dim}, H, W], got {tuple(features.shape)}")
        if audio.dim() != 3 or audio.shape[-1] != self.audio_dim:
            raise ValueError(f"ABTI: audio must be [B, T, {self.audio_dim}], got {tuple(audio.shape)}")
        b, t, _ = audio.shape
        bt, c, h, w = features.shape
        if b * t != bt:
            raise ValueError(f"ABTI: features have {bt} frames but audio {tuple(audio.shape)} describes B*T = {b * t}")
        frames = features.flatten(2).transpose(1, 2).reshape(b, t, h * w, c)  # [B, T, HW, C]
        s, o = self.gather(audio, frames)  # [B, T, T, HW], [B, T, T, C_b]
        o_hat = self.interact(o)  # [B, T, T, C_b]
        out = self.remap(frames, s, o_hat)  # [B, T, HW, C]
        return out.reshape(bt, h * w, c).transpose(1, 2).reshape(bt, c, h, w)  # [B*T, C, H, W]
