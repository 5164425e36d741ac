"""Audio-visual cross-attention of the pixel decoder, eq. (1)-(2) of AQFormer (§3.2).

Every pixel of frame t (the query) attends to that frame's single audio feature A_t (the key/value).
Two readings of eq. (1) are offered (see docs/paper_choices.md, "Eq. (1): softmax over one key"):

- ``"printed"``: the equation exactly as printed. The softmax runs over the key axis, which has length
  1, so every attention weight equals 1 and V̄_t = f_v(A_t) at every pixel; f_q and f_k receive zero
  gradient. The softmax is still evaluated so the code reads as the equation.
- ``"sigmoid"``: each pixel gates the audio value with sigmoid(q . k / sqrt(C_m)), so the weight
  depends on the pixel's similarity to the audio.
"""
from __future__ import annotations

import math
from typing import Tuple

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.layers import Conv2d, get_norm
from torch import nn

__all__ = ["AV_ATTN_MODES", "AudioVisualCrossAttention", "eq1_audio_visual_attention"]

AV_ATTN_MODES = ("printed", "sigmoid")


def eq1_audio_visual_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mode: str
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eq. (1): V̄_t = Softmax(f_q(V_t) f_k(A_t)^T / sqrt(C_m)) f_v(A_t).

    Args:
        query: f_q(V_t), [B*T, HW, C_m].
        key: f_k(A_t), [B*T, 1, C_m] (one audio key per frame).
        value: f_v(A_t), [B*T, 1, C_f].
        mode: "printed" (softmax over the single key, weights are all 1) or "sigmoid" (per-pixel gate).

    Returns:
        (V̄ [B*T, HW, C_f], attention weights [B*T, HW, 1]).
    """
    if mode not in AV_ATTN_MODES:
        raise ValueError(f"AV attention mode must be one of {AV_ATTN_MODES}, got {mode!r}")
    # One key per frame: Q K^T is a dot product per pixel and the product with V an outer product.
    # Written as broadcasts, not as bmm with an inner or outer size of 1, which the BLAS runs at a
    # small fraction of its speed (bench/README.md, "A faster main job").
    logits = (query * key).sum(dim=-1, keepdim=True) / math.sqrt(query.shape[-1])  # [B*T, HW, 1]
    if mode == "printed":
        weights = logits.softmax(dim=-1)  # [B*T, HW, 1], softmax over the one audio key: all ones
    else:
        weights = logits.sigmoid()  # [B*T, HW, 1], per-pixel gate in (0, 1)
    return weights * value, weights  # [B*T, HW, 1] x [B*T, 1, C_f] -> [B*T, HW, C_f]; [B*T, HW, 1]


class AudioVisualCrossAttention(nn.Module):
    """Eq. (1)-(2) for one scale: M_t = V̄_t + f_w(V_t), with V̄_t from :func:`eq1_audio_visual_attention`.

    f_q, f_w act on every pixel (1x1 convolutions), f_k, f_v on the audio feature (linear layers).
    f_w is followed by the configured normalisation (like Mask2Former's input projection, which eq. (2)
    replaces); the norm acts on the visual branch only, so it cannot remove the audio term.

    Args:
        visual_dim: C_v, channels of the backbone feature V.
        audio_dim: C_a, channels of the audio feature A.
        attn_dim: C_m, width of f_q and f_k.
        out_dim: C_f, width of f_v, f_w and of the output.
        mode: "printed" or "sigmoid" (see module docstring).
        norm: detectron2 norm name applied after f_w ("" for none).
    """

    def __init__(self, visual_dim: int, audio_dim: int, attn_dim: int, out_dim: int, mode: str = "printed",
                 norm: str = ""):
        super().__init__()
        for name, val in (("visual_dim", visual_dim), ("audio_dim", audio_dim), ("attn_dim", attn_dim),
                          ("out_dim", out_dim)):
            if val <= 0:
                raise ValueError(f"AudioVisualCrossAttention: {name} must be positive, got {val}")
        if mode not in AV_ATTN_MODES:
            raise ValueError(f"AudioVisualCrossAttention: mode must be one of {AV_ATTN_MODES}, got {mode!r}")
        self.mode = mode
        self.audio_dim = audio_dim
        self.f_q = nn.Conv2d(visual_dim, attn_dim, kernel_size=1)
        self.f_k = nn.Linear(audio_dim, attn_dim)
        self.f_v = nn.Linear(audio_dim, out_dim)
        self.f_w = Conv2d(visual_dim, out_dim, kernel_size=1, bias=not norm, norm=get_norm(norm, out_dim))
        for layer in (self.f_q, self.f_k, self.f_v):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        weight_init.c2_xavier_fill(self.f_w)

    def attend(self, visual: torch.Tensor, audio: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Eq. (1) on image-shaped input.

        Args:
            visual: V, [B*T, C_v, H, W].
            audio: A, [B, T, C_a].

        Returns:
            (V̄ [B*T, C_f, H, W], attention weights [B*T, HW, 1]).
        """
        if visual.dim() != 4:
            raise ValueError(f"visual feature must be [B*T, C_v, H, W], got {tuple(visual.shape)}")
        if audio.dim() != 3 or audio.shape[-1] != self.audio_dim:
            raise ValueError(f"audio must be [B, T, {self.audio_dim}], got {tuple(audio.shape)}")
        bt, _, h, w = visual.shape
        if audio.shape[0] * audio.shape[1] != bt:
            raise ValueError(
                f"visual has {bt} frames but audio {tuple(audio.shape)} describes "
                f"B*T = {audio.shape[0] * audio.shape[1]}"
            )
        audio_t = audio.reshape(bt, 1, self.audio_dim)  # [B*T, 1, C_a], clip-major like the frames
        query = self.f_q(visual).flatten(2).transpose(1, 2)  # [B*T, HW, C_m]
        v_bar, weights = eq1_audio_visual_attention(query, self.f_k(audio_t), self.f_v(audio_t), self.mode)
        v_bar = v_bar.transpose(1, 2).reshape(bt, -1, h, w)  # [B*T, C_f, H, W]
        return v_bar, weights

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Eq. (2): M_t = V̄_t + f_w(V_t). visual [B*T, C_v, H, W], audio [B, T, C_a] -> [B*T, C_f, H, W]."""
        v_bar, _ = self.attend(visual, audio)
        return v_bar + self.f_w(visual)  # [B*T, C_f, H, W]
