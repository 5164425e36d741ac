"""Multi-scale deformable-attention transformer encoder (Deformable DETR, post-norm), used by the
pixel decoder to aggregate the audio-enhanced features M^1..M^3 into M̂^1..M̂^3 (§3.2)."""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn

from ..layers import FFNLayer
from .ms_deform_attn import MSDeformAttn

__all__ = ["MSDeformEncoderLayer", "MSDeformEncoder", "encoder_reference_points"]


def encoder_reference_points(spatial_shapes: List[Tuple[int, int]], device: torch.device,
                             dtype: torch.dtype) -> torch.Tensor:
    """Pixel-centre reference point of every flattened position, normalised to [0, 1] as (x, y).

    Args:
        spatial_shapes: [(H_l, W_l), ...] of the L levels.

    Returns:
        [S, 2] with S = sum_l H_l * W_l; position (i, j) of level l maps to ((j + 0.5) / W_l, (i + 0.5) / H_l).
    """
    points = []
    for h, w in spatial_shapes:
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h  # [H]
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w  # [W]
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # [H, W] each
        points.append(torch.stack([grid_x, grid_y], dim=-1).reshape(h * w, 2))  # [H*W, 2]
    return torch.cat(points, dim=0)  # [S, 2]


class MSDeformEncoderLayer(nn.Module):
    """src = LN(src + MSDeformAttn(src + pos, ref, src)); src = LN(src + FFN(src)) (post-norm).

    Args:
        d_model: width C.
        dim_feedforward: FFN hidden width.
        dropout: dropout on the attention output and inside the FFN.
        n_levels, n_heads, n_points: see :class:`MSDeformAttn`.
    """

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float, n_levels: int, n_heads: int,
                 n_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        self.ffn = FFNLayer(d_model, dim_feedforward, dropout=dropout, activation="relu", norm_position="post")

    def forward(self, src: torch.Tensor, pos: torch.Tensor, reference_points: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor) -> torch.Tensor:
        """src: [N, S, C]; pos: [N or 1, S, C]; reference_points: [N, S, L, 2] -> [N, S, C]."""
        attended = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index)  # [N, S, C]
        src = self.norm(src + self.dropout(attended))  # [N, S, C]
        return self.ffn(src)  # [N, S, C]


class MSDeformEncoder(nn.Module):
    """A stack of :class:`MSDeformEncoderLayer` over the concatenation of L feature maps.

    Args:
        num_layers: number of encoder layers (>= 1).
        d_model, dim_feedforward, dropout, n_levels, n_heads, n_points: see :class:`MSDeformEncoderLayer`.
    """

    def __init__(self, num_layers: int, d_model: int, dim_feedforward: int, dropout: float, n_levels: int,
                 n_heads: int, n_points: int):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MSDeformEncoder: num_layers must be >= 1, got {num_layers}")
        self.n_levels = n_levels
        self.layers = nn.ModuleList(
            MSDeformEncoderLayer(d_model, dim_feedforward, dropout, n_levels, n_heads, n_points)
            for _ in range(num_layers)
        )

    def forward(self, src: torch.Tensor, pos: torch.Tensor, spatial_shapes: List[Tuple[int, int]]) -> torch.Tensor:
        """
        Args:
            src: [N, S, C] features of all levels, flattened level after level.
            pos: [N, S, C] positional (+ level) embedding, or [1, S, C] for one shared by all N.
            spatial_shapes: [(H_l, W_l), ...] of the L levels.

        Returns:
            [N, S, C].
        """
        if len(spatial_shapes) != self.n_levels:
            raise ValueError(f"MSDeformEncoder: expected {self.n_levels} levels, got {len(spatial_shapes)}")
        n, s, _ = src.shape
        shapes = torch.as_tensor(spatial_shapes, dtype=torch.long, device=src.device)  # [L, 2]
        areas = shapes.prod(dim=1)  # [L]
        level_start_index = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])  # [L]
        ref = encoder_reference_points(spatial_shapes, src.device, src.dtype)  # [S, 2]
        if ref.shape[0] != s:
            raise ValueError(
                f"MSDeformEncoder: spatial shapes {spatial_shapes} cover {ref.shape[0]} positions, src has {s}"
            )
        # Without padding every level covers the whole image, so the same point is used on every level.
        ref = ref[None, :, None, :].expand(n, s, self.n_levels, 2)  # [N, S, L, 2]
        for layer in self.layers:
            src = layer(src, pos, ref, shapes, level_start_index)  # [N, S, C]
        return src
