"""Multi-scale deformable attention (Zhu et al., Deformable DETR, ICLR 2021, eq. (2)), the attention of the
pixel decoder's encoder (§3.2):

    MSDeformAttn(z_q, p̂_q, {x^l}) = sum_m W_m [ sum_l sum_k A_mlqk * W'_m x^l(p̂_q + Δp_mlqk / (W_l, H_l)) ]

with z_q the query, p̂_q its normalised reference point, Δp_mlqk (pixels of level l) and A_mlqk (softmaxed
jointly over l, k) predicted from z_q by linear layers, W'_m the value projection of head m and W_m the
output projection. The sampling and weighted sum is :func:`aqformer_d2.modeling.ops.ms_deform_attn`.

Symbols: N batch, Lq queries, S = sum_l H_l * W_l flattened values, C channels, M heads, D = C / M channels
per head, L levels, P sampling points per head and level.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn

from ..layers.linear import Linear
from ..ops import linear, ms_deform_attn

__all__ = ["MSDeformAttn"]


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention: every query attends to ``n_points`` learned sampling points
    around its reference point on each of ``n_levels`` feature maps, per head.

    Sampling offsets and attention weights are predicted from the query by linear layers; the
    attention weights are softmaxed jointly over levels x points. Offsets are in pixels of each level
    and are normalised by that level's (W, H) before being added to the normalised reference point.

    Args:
        d_model: channel width C of queries and values.
        n_levels: number of feature levels L.
        n_heads: number of heads M (must divide d_model).
        n_points: sampling points P per head and level.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        for name, val in (("d_model", d_model), ("n_levels", n_levels), ("n_heads", n_heads), ("n_points", n_points)):
            if val <= 0:
                raise ValueError(f"MSDeformAttn: {name} must be positive, got {val}")
        if d_model % n_heads != 0:
            raise ValueError(f"MSDeformAttn: d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = Linear(d_model, d_model)
        self.output_proj = Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's initialisation: offsets start on a directional grid (head h points along
        angle 2*pi*h/M, point k at distance k+1 pixels), attention weights start uniform."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.n_heads, dtype=torch.float64) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], dim=-1)  # [M, 2]
        grid = grid / grid.abs().max(dim=-1, keepdim=True).values  # largest component = +-1
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)  # [M, L, P, 2]
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float64).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten().to(self.sampling_offsets.bias.dtype))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        input_level_start_index: torch.Tensor,
        input_padding_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            query: [N, Lq, C].
            reference_points: [N, Lq, L, 2] normalised (x, y) in [0, 1], one per level.
            input_flatten: [N, S, C] values of all levels, flattened level after level.
            input_spatial_shapes: [L, 2] (H_l, W_l).
            input_level_start_index: [L].
            input_padding_mask: optional bool [N, S], True at padded positions (their value is zeroed).

        Returns:
            [N, Lq, C].
        """
        if query.dim() != 3 or query.shape[-1] != self.d_model:
            raise ValueError(f"query must be [N, Lq, {self.d_model}], got {tuple(query.shape)}")
        if input_flatten.dim() != 3 or input_flatten.shape[-1] != self.d_model:
            raise ValueError(f"input_flatten must be [N, S, {self.d_model}], got {tuple(input_flatten.shape)}")
        n, lq, _ = query.shape
        s = input_flatten.shape[1]
        if input_flatten.shape[0] != n:
            raise ValueError(f"query batch {n} != input_flatten batch {input_flatten.shape[0]}")
        if tuple(reference_points.shape) != (n, lq, self.n_levels, 2):
            raise ValueError(
                f"reference_points must be {(n, lq, self.n_levels, 2)} (normalised x, y per level), "
                f"got {tuple(reference_points.shape)}"
            )
        if input_spatial_shapes.shape[0] != self.n_levels:
            raise ValueError(f"expected {self.n_levels} levels, got spatial shapes {input_spatial_shapes.tolist()}")

        value = self.value_proj(input_flatten)  # [N, S, C]
        if input_padding_mask is not None:
            if tuple(input_padding_mask.shape) != (n, s) or input_padding_mask.dtype != torch.bool:
                raise ValueError(
                    f"input_padding_mask must be bool [{n}, {s}], got {input_padding_mask.dtype} "
                    f"{tuple(input_padding_mask.shape)}"
                )
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, s, self.n_heads, self.d_model // self.n_heads)  # [N, S, M, D]
        locations, weights = self.sampling_points(query, reference_points, input_spatial_shapes)
        output = ms_deform_attn(value, input_spatial_shapes, input_level_start_index, locations, weights)  # [N, Lq, C]
        return self.output_proj(output)  # [N, Lq, C]

    def sampling_points(self, query: torch.Tensor, reference_points: torch.Tensor,
                        spatial_shapes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Sampling locations p̂_q + Δp_mlqk / (W_l, H_l) and attention weights A_mlqk of every query.

        Δp = ``sampling_offsets(query)`` in pixels of each level; A = softmax over the L x P logits
        ``attention_weights(query)`` of each head. The two linear layers (separate parameters, so that
        checkpoints of Deformable DETR / Mask2Former layout load unchanged) run as ONE product with their
        rows concatenated, and the offset rows are divided by (W_l, H_l) before it, so no division per
        sample is left: (W_off / (W_l, H_l)) z + b_off / (W_l, H_l) = Δp / (W_l, H_l).

        Args:
            query: [N, Lq, C].
            reference_points: [N, Lq, L, 2] normalised (x, y).
            spatial_shapes: [L, 2] (H_l, W_l).

        Returns:
            (locations [N, Lq, M, L, P, 2] normalised (x, y); weights [N, Lq, M, L, P], a view of
            [N, M, L, P, Lq] storage).
        """
        m, num_levels, num_points = self.n_heads, self.n_levels, self.n_points
        n, lq, _ = query.shape
        weight_off = self.sampling_offsets.weight  # [M*L*P*2, C]
        bias_off = self.sampling_offsets.bias  # [M*L*P*2]
        size = spatial_shapes.flip(-1).to(weight_off.dtype)  # [L, 2] as (W_l, H_l)
        size = size.view(1, num_levels, 1, 2).expand(m, num_levels, num_points, 2).reshape(-1)  # [M*L*P*2]
        weight = torch.cat([weight_off / size[:, None], self.attention_weights.weight])  # [M*L*P*3, C]
        bias = torch.cat([bias_off / size, self.attention_weights.bias])  # [M*L*P*3]
        projected = linear(query, weight, bias)  # [N, Lq, M*L*P*3]
        n_off = m * num_levels * num_points * 2
        offsets = projected[..., :n_off].view(n, lq, m, num_levels, num_points, 2)  # Δp / (W_l, H_l)
        locations = reference_points[:, :, None, :, None, :] + offsets  # [N, Lq, M, L, P, 2]
        logits = projected[..., n_off:].view(n, lq, m, num_levels * num_points)  # [N, Lq, M, L*P]
        # softmax jointly over L x P, computed with Lq innermost (a softmax over a last axis of only L*P
        # entries is several times slower on the CPU)
        weights = logits.permute(0, 2, 3, 1).softmax(dim=2)  # [N, M, L*P, Lq]
        weights = weights.view(n, m, num_levels, num_points, lq).permute(0, 4, 1, 2, 3)  # [N, Lq, M, L, P]
        return locations, weights
