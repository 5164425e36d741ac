"""The kernels behind :func:`~aqformer_d2.modeling.ops.ms_deform_attn`: two ways of sampling the value maps
bilinearly and taking the attention-weighted sum. Both compute Deformable DETR's operator; they differ in
memory traffic (bench/README.md).

- :func:`grid_sample_and_weight`: ``F.grid_sample`` per level on an [N*M, D, H, W] copy of the values, then
  the weighted sum over the points, either accumulated in place (:func:`accumulate_in_place`, no autograd)
  or by :class:`PointWeightedSum` (the same accumulation with a backward of its own).
- :func:`gather_rows_and_weight`: the four bilinear corners of every point as whole rows of D channels,
  gathered and weighted by one ``F.embedding_bag``; the values stay in their [N, S, M, D] layout.

Symbols: N batch, Lq queries, S = sum_l H_l * W_l flattened values, M heads, D channels per head, L levels,
P sampling points per head and level, B = N * M (grid sampler) or N * Lq * M (row sampler).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch.nn import functional as F

__all__ = [
    "PointSum", "PointWeightedSum", "accumulate_in_place", "accumulate_with_autograd", "gather_rows_and_weight",
    "grid_sample_and_weight",
]

#: (sampled [B, D, P, Lq], weight [B, P, Lq], output [B, D, Lq] or None) -> output + sum_p sampled[:, :, p] *
#: weight[:, None, p], [B, D, Lq]: the weighted sum over the points of one level, added to the other levels' sum.
PointSum = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


class PointWeightedSum(torch.autograd.Function):
    """out[b, :, q] = sum_p sampled[b, :, p, q] * weight[b, p, q] with a backward that writes only the
    gradients: sampled [B, D, P, Lq], weight [B, P, Lq] -> [B, D, Lq].

    Autograd of ``(sampled * weight[:, None]).sum(2)`` writes and reads two [B, D, P, Lq] products (the
    forward's and the one for the weight gradient); autograd of the in-place loop of
    :func:`accumulate_in_place` would write a whole zero [B, D, P, Lq] gradient for every point's slice.
    Here the forward accumulates point by point into the [B, D, Lq] output, and the weight gradient
    sum_d grad[b, d, q] * sampled[b, d, p, q] is reduced point by point from [B, D, Lq] products."""

    @staticmethod
    def forward(ctx, sampled: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(sampled, weight)
        return accumulate_in_place(sampled, weight)  # [B, D, Lq]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: torch.Tensor):  # grad_output [B, D, Lq]
        sampled, weight = ctx.saved_tensors
        grad_sampled = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_sampled = grad_output[:, :, None] * weight[:, None]  # [B, D, P, Lq]
        if ctx.needs_input_grad[1]:
            grad_weight = torch.stack(
                [(grad_output * sampled[:, :, point]).sum(1) for point in range(sampled.shape[2])], dim=1
            )  # [B, P, Lq]
        return grad_sampled, grad_weight


def accumulate_in_place(sampled: torch.Tensor, weight: torch.Tensor,
                        output: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``output`` + sum_p sampled[:, :, p] * weight[:, None, p] (sampled [B, D, P, Lq], weight [B, P, Lq],
    output [B, D, Lq] or None for 0), accumulated point after point into one [B, D, Lq] buffer
    (``addcmul_``): no [B, D, P, Lq] product is allocated. Writes into ``output``; used when nothing
    records gradients."""
    first = 0
    if output is None:
        output = sampled[:, :, 0] * weight[:, None, 0]  # [B, D, Lq]
        first = 1
    for point in range(first, sampled.shape[2]):
        output.addcmul_(sampled[:, :, point], weight[:, None, point])
    return output


def accumulate_with_autograd(sampled: torch.Tensor, weight: torch.Tensor,
                             output: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The sum of :func:`accumulate_in_place` through :class:`PointWeightedSum` (out of place, differentiable)."""
    term = PointWeightedSum.apply(sampled, weight)  # [B, D, Lq]
    return term if output is None else output + term


def grid_sample_and_weight(
    value_t: torch.Tensor,
    shapes: Sequence[Sequence[int]],
    starts: Sequence[int],
    grids: torch.Tensor,
    weights: torch.Tensor,
    point_sum: PointSum,
) -> torch.Tensor:
    """Bilinear samples of every level (``grid_sample``, ``align_corners=False``, zero padding), weighted
    and summed over levels and points.

    Args:
        value_t: [B, D, S] values of all levels (B = N * M), flattened level after level on S.
        shapes: [(H_l, W_l), ...] of the L levels; ``starts``: offset of each level on S.
        grids: [B, L, P, Lq, 2] sampling locations in grid_sample's [-1, 1] coordinates (x, y).
        weights: [B, L, P, Lq] attention weights.
        point_sum: the weighted sum over the points of one level, :func:`accumulate_in_place` or
            :func:`accumulate_with_autograd`.

    Returns:
        [B, D, Lq].

    Layout: ``grid_sample`` returns [B, D, P, Lq], so the weighted sum over the points reads whole
    contiguous Lq rows.
    """
    b, d, _ = value_t.shape
    output: Optional[torch.Tensor] = None
    for level, (h, w) in enumerate(shapes):
        value_l = value_t[:, :, starts[level]:starts[level] + h * w].view(b, d, h, w)  # [B, D, H, W]
        sampled = F.grid_sample(
            value_l, grids[:, level], mode="bilinear", padding_mode="zeros", align_corners=False
        )  # [B, D, P, Lq]
        output = point_sum(sampled, weights[:, level], output)  # [B, D, Lq]
    assert output is not None  # L >= 1 was checked by the caller
    return output


def gather_rows_and_weight(
    value: torch.Tensor,
    shapes: Sequence[Sequence[int]],
    starts: Sequence[int],
    locations: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """The same operator as one weighted gather of value rows.

    Args:
        value: [N, S, M, D] per-head values of all levels, flattened level after level on S.
        shapes: [(H_l, W_l), ...] of the L levels; ``starts``: offset of each level on S.
        locations: [N, Lq, M, L, P, 2] normalised (x, y).
        weights: [N, Lq, M, L, P] attention weights.

    Returns:
        [N, Lq, M * D]: the sum over levels, points and the four bilinear corners of attention weight x
        bilinear weight x value row; corners outside the map weigh 0 (grid_sample's zero padding).

    A normalised location maps to the continuous pixel coordinate ``(x * W_l - 0.5, y * H_l - 0.5)`` (pixel
    centres at integers: grid_sample's ``align_corners=False`` rule). Every per-point quantity is a
    [B, L * P] matrix (B = N * Lq * M bags, one per query and head; column l * P + p is point p of level l)
    and every per-level constant a [L * P] row, so each element-wise step is one plain broadcast; the four
    corners are concatenated to [B, 4 * L * P] for ``F.embedding_bag``.
    """
    n, s, m, d = value.shape
    _, lq, _, num_levels, num_points, _ = locations.shape
    cols = num_levels * num_points
    bags, rows_total = n * lq * m, n * s * m
    index_dtype = torch.int32 if rows_total < 2 ** 31 else torch.int64
    dev, dtype = value.device, value.dtype

    def per_column(values, kind) -> torch.Tensor:  # one number per level -> [L * P], repeated over the points
        return torch.tensor(values, device=dev, dtype=kind).repeat_interleave(num_points)

    width, height = per_column([w for _, w in shapes], index_dtype), per_column([h for h, _ in shapes], index_dtype)
    start = per_column(list(starts), index_dtype)  # [L*P]
    locations = locations.reshape(bags, cols, 2)  # [B, L*P, 2] (a view of a contiguous input)

    def corners(axis: int, size: torch.Tensor):
        """Lower corner index and the two bilinear weights along one axis, 0 outside the map."""
        size_f = size.to(locations.dtype)  # [L*P]
        pixel = torch.addcmul(size_f.new_tensor(-0.5), locations[..., axis], size_f)  # [B, L*P], x * W - 0.5
        # Points more than one pixel outside have no corner inside either way; clamping them keeps the
        # integer conversion in range for any location.
        pixel = torch.minimum(pixel, size_f + 1).clamp_(min=-2.0)
        low = pixel.floor()
        frac = (pixel - low).to(dtype)  # [B, L*P], in [0, 1)
        low = low.to(index_dtype)
        w_low = (1 - frac) * ((low >= 0) & (low < size))  # [B, L*P]
        w_high = frac * ((low >= -1) & (low < size - 1))  # [B, L*P]
        return low, w_low, w_high

    x0, wx0, wx1 = corners(0, width)
    y0, wy0, wy1 = corners(1, height)
    attn = weights.reshape(bags, cols).to(dtype)  # [B, L*P]
    wy0, wy1 = wy0 * attn, wy1 * attn
    corner_weights = torch.cat([wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1], dim=1)  # [B, 4*L*P]
    # row of value viewed as [N*S*M, D]: ((n * S + s) * M + m), s = start_l + y * W_l + x
    bag = torch.arange(bags, device=dev, dtype=index_dtype).view(n, lq, m)  # [N, Lq, M]
    bag_base = (torch.div(bag, lq * m, rounding_mode="floor") * (s * m) + bag % m).view(bags, 1)  # [B, 1]
    row00 = (start + y0 * width + x0) * m + bag_base  # [B, L*P], corner (y0, x0)
    step_x, step_y = m, width * m  # +1 in x, +1 in y
    rows = torch.cat([row00, row00 + step_x, row00 + step_y, row00 + (step_y + step_x)], dim=1)  # [B, 4*L*P]
    rows.clamp_(0, rows_total - 1)  # corners outside the map have weight 0; any valid row will do
    out = F.embedding_bag(rows, value.reshape(rows_total, d), per_sample_weights=corner_weights, mode="sum")
    return out.view(n, lq, m * d)  # [B, D] -> [N, Lq, M*D]
