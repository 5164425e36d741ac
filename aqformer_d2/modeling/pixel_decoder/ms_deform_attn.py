"""Multi-scale deformable attention (Zhu et al., Deformable DETR, ICLR 2021) in pure PyTorch.

The sampling is done with bilinear ``F.grid_sample`` (``align_corners=False``, zero padding), which is
the same arithmetic as the published CUDA operator: a normalised location ``(x, y)`` in ``[0, 1]`` maps
to the continuous pixel coordinate ``(x * W - 0.5, y * H - 0.5)``, and bilinear corners that fall outside
the map contribute zero. The same code runs on CPU and GPU; there is no compiled extension.

Two samplers compute it. On the CPU at inference, :func:`sample_rows_and_weight` gathers the four bilinear corners of
every sampling point as whole rows of D channels with one ``F.embedding_bag`` (sum mode, per-sample
weights = bilinear weight x attention weight): the values stay in their [N, S, M, D] layout and each
corner is one contiguous read. ``grid_sample`` instead gathers every channel of every corner separately
from an [N*M, D, H, W] copy, and was 32% of the pixel decoder's CPU time (bench/README.md). Elsewhere
(GPU, training, ONNX export, tracing) :func:`sample_and_weight` runs ``grid_sample``.

Symbols: N batch, Lq queries, S = sum_l H_l * W_l flattened values, M heads, D = C / M channels per
head, L levels, P sampling points per head and level.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..layers.linear import Linear, linear

__all__ = [
    "MSDeformAttn", "ms_deform_attn_core", "sample_and_weight", "sample_rows_and_weight", "use_row_sampler",
    "check_spatial_shapes",
]


def check_spatial_shapes(
    spatial_shapes: torch.Tensor, level_start_index: torch.Tensor, num_values: int
) -> Tuple[List[List[int]], List[int]]:
    """Validate ``spatial_shapes`` [L, 2] (rows (H_l, W_l)) and ``level_start_index`` [L] against a
    flattened value sequence of length ``num_values``.

    Returns:
        (shapes, starts): ``[[H_l, W_l], ...]`` and the start offset of each level, as Python ints.
    """
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2:
        raise ValueError(f"spatial_shapes must be [L, 2] (H, W per level), got {tuple(spatial_shapes.shape)}")
    shapes = [[int(h), int(w)] for h, w in spatial_shapes.tolist()]
    if any(h <= 0 or w <= 0 for h, w in shapes):
        raise ValueError(f"spatial_shapes must be positive, got {shapes}")
    starts = [0]
    for h, w in shapes[:-1]:
        starts.append(starts[-1] + h * w)
    if level_start_index.dim() != 1 or level_start_index.tolist() != starts:
        raise ValueError(
            f"level_start_index {level_start_index.tolist()} does not match spatial_shapes {shapes} "
            f"(expected {starts})"
        )
    total = sum(h * w for h, w in shapes)
    if total != num_values:
        raise ValueError(f"spatial_shapes {shapes} cover {total} positions but the value has {num_values}")
    return shapes, starts


def ms_deform_attn_core(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Sample every level bilinearly at the given locations and take the attention-weighted sum.

    Args:
        value: [N, S, M, D] per-head values of all levels, flattened level after level.
        spatial_shapes: [L, 2] integer (H_l, W_l) of each level.
        level_start_index: [L] offset of each level in the S axis.
        sampling_locations: [N, Lq, M, L, P, 2] normalised (x, y) in [0, 1] (outside: zero padding).
        attention_weights: [N, Lq, M, L, P] weights (normally softmaxed jointly over L x P).

    Returns:
        [N, Lq, M * D].
    """
    if value.dim() != 4:
        raise ValueError(f"value must be [N, S, M, D], got {tuple(value.shape)}")
    n, s, m, d = value.shape
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(f"sampling_locations must be [N, Lq, M, L, P, 2], got {tuple(sampling_locations.shape)}")
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    if sampling_locations.shape[0] != n or sampling_locations.shape[2] != m:
        raise ValueError(
            f"sampling_locations {tuple(sampling_locations.shape)} disagree with value {tuple(value.shape)} "
            "on the batch or head axis"
        )
    if tuple(attention_weights.shape) != (n, lq, m, num_levels, num_points):
        raise ValueError(
            f"attention_weights must be {(n, lq, m, num_levels, num_points)}, got {tuple(attention_weights.shape)}"
        )
    shapes, starts = check_spatial_shapes(spatial_shapes, level_start_index, s)
    if len(shapes) != num_levels:
        raise ValueError(f"spatial_shapes has {len(shapes)} levels but sampling_locations has {num_levels}")

    # grid_sample expects coordinates in [-1, 1]; with align_corners=False, -1/+1 are the outer pixel edges.
    value_t = value.permute(0, 2, 3, 1).reshape(n * m, d, s)  # [N*M, D, S], one copy for all levels
    grids = (2.0 * sampling_locations - 1.0).to(value.dtype)  # [N, Lq, M, L, P, 2]
    grids = grids.permute(0, 2, 3, 4, 1, 5).flatten(0, 1)  # [N*M, L, P, Lq, 2]
    weights = attention_weights.permute(0, 2, 3, 4, 1).flatten(0, 1)  # [N*M, L, P, Lq]
    output = sample_and_weight(value_t, shapes, starts, grids, weights.to(value.dtype))  # [N*M, D, Lq]
    return output.view(n, m * d, lq).transpose(1, 2).contiguous()  # [N, Lq, M*D]


class _PointWeightedSum(torch.autograd.Function):
    """out[b, :, q] = sum_p sampled[b, :, p, q] * weight[b, p, q] with a backward that writes only the
    gradients: sampled [B, D, P, Lq], weight [B, P, Lq] -> [B, D, Lq].

    Autograd of ``(sampled * weight[:, None]).sum(2)`` writes and reads two [B, D, P, Lq] products (the
    forward's and the one for the weight gradient); here the forward accumulates point by point into
    the [B, D, Lq] output, and the weight gradient sum_d grad[b, d, q] * sampled[b, d, p, q] is reduced
    point by point from [B, D, Lq] products (bench/README.md, "CPU speed, issue 11 (third session)")."""

    @staticmethod
    def forward(ctx, sampled: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(sampled, weight)
        output = sampled[:, :, 0] * weight[:, None, 0]  # [B, D, Lq]
        for point in range(1, sampled.shape[2]):
            output.addcmul_(sampled[:, :, point], weight[:, None, point])
        return output

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


def sample_and_weight(
    value_t: torch.Tensor,
    shapes: Sequence[Sequence[int]],
    starts: Sequence[int],
    grids: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """The arithmetic of :func:`ms_deform_attn_core` in the layout that is fast on the CPU.

    Args:
        value_t: [B, D, S] values of all levels (B = N * M heads), flattened level after level on S.
        shapes: [(H_l, W_l), ...] of the L levels; ``starts``: offset of each level on S.
        grids: [B, L, P, Lq, 2] sampling locations in grid_sample's [-1, 1] coordinates (x, y).
        weights: [B, L, P, Lq] attention weights.

    Returns:
        [B, D, Lq]: sum over levels and points of weight x bilinear sample.

    Layout: ``grid_sample`` returns [B, D, P, Lq], so the weighted sum over the points reads whole
    contiguous Lq rows. Without autograd it is accumulated in place, point after point, into one
    [B, D, Lq] buffer (``addcmul_``), so no [B, D, P, Lq] product is ever allocated. With autograd the
    points of a level go through :class:`_PointWeightedSum`, the same accumulation with a backward of its
    own: autograd of the in-place loop would write a whole zero [B, D, P, Lq] gradient for every point's
    slice, and autograd of ``(sampled * weight).sum`` reads and writes two [B, D, P, Lq] products
    (bench/README.md, "A faster main job" and "CPU speed, issue 11 (third session)").
    """
    b, d, _ = value_t.shape
    num_points = grids.shape[2]
    track = torch.is_grad_enabled() and (value_t.requires_grad or grids.requires_grad or weights.requires_grad)
    output: Optional[torch.Tensor] = None
    for level, (h, w) in enumerate(shapes):
        value_l = value_t[:, :, starts[level]:starts[level] + h * w].view(b, d, h, w)  # [B, D, H, W]
        sampled = F.grid_sample(
            value_l, grids[:, level], mode="bilinear", padding_mode="zeros", align_corners=False
        )  # [B, D, P, Lq]
        if track:
            term = _PointWeightedSum.apply(sampled, weights[:, level])  # [B, D, P, Lq] -> [B, D, Lq]
            output = term if output is None else output + term
            continue
        for point in range(num_points):
            weight = weights[:, level, point].unsqueeze(1)  # [B, 1, Lq]
            if output is None:
                output = sampled[:, :, point] * weight  # [B, D, Lq]
            else:
                output.addcmul_(sampled[:, :, point], weight)
    assert output is not None  # L >= 1 and P >= 1 were checked by the callers
    return output


def sample_rows_and_weight(
    value: torch.Tensor,
    shapes: Sequence[Sequence[int]],
    starts: Sequence[int],
    pixel_x: torch.Tensor,
    pixel_y: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """The arithmetic of :func:`sample_and_weight` as one weighted gather of value rows (CPU sampler).

    Args:
        value: [N, S, M, D] per-head values of all levels, flattened level after level on S.
        shapes: [(H_l, W_l), ...] of the L levels; ``starts``: offset of each level on S.
        pixel_x, pixel_y: [N, Lq, M, L * P] sampling locations as continuous pixel coordinates of each
            level, pixel centres at integers: ``(x * W_l - 0.5, y * H_l - 0.5)`` for a normalised (x, y),
            which is grid_sample's ``align_corners=False`` mapping. Column l * P + p is point p of level l.
        weights: [N, Lq, M, L * P] attention weights, same columns.

    Returns:
        [N, Lq, M * D]: the sum over levels, points and the four bilinear corners of attention weight x
        bilinear weight x value row; corners outside the map weigh 0 (grid_sample's zero padding).

    Layout: every per-point quantity is a [B, L * P] matrix (B = N * Lq * M bags, one per query and
    head) and every per-level constant a [L * P] row, so each element-wise step is one plain broadcast;
    the four corners are concatenated to [B, 4 * L * P] for ``F.embedding_bag``.
    """
    n, s, m, d = value.shape
    lq = pixel_x.shape[1]
    cols = pixel_x.shape[-1]
    num_points = cols // len(shapes)
    bags, rows_total = n * lq * m, n * s * m
    index_dtype = torch.int32 if rows_total < 2 ** 31 else torch.int64
    dev, dtype = value.device, value.dtype

    def per_column(values) -> torch.Tensor:  # one integer per level -> [L * P], repeated over the points
        return torch.tensor(values, device=dev, dtype=index_dtype).repeat_interleave(num_points)

    width, height = per_column([w for _, w in shapes]), per_column([h for h, _ in shapes])  # [L*P] each
    start = per_column(list(starts))  # [L*P]

    def corners(pixel: torch.Tensor, size: torch.Tensor):
        """Lower corner index and the two bilinear weights along one axis, 0 outside the map."""
        # Points more than one pixel outside have no corner inside either way; clamping them keeps the
        # integer conversion in range for any offset.
        pixel = torch.minimum(pixel.reshape(bags, cols), (size + 1).to(pixel.dtype)).clamp_(min=-2.0)  # [B, L*P]
        low = pixel.floor()
        frac = (pixel - low).to(dtype)  # [B, L*P], in [0, 1)
        low = low.to(index_dtype)
        w_low = (1 - frac) * ((low >= 0) & (low < size))  # [B, L*P]
        w_high = frac * ((low >= -1) & (low < size - 1))  # [B, L*P]
        return low, w_low, w_high

    x0, wx0, wx1 = corners(pixel_x, width)
    y0, wy0, wy1 = corners(pixel_y, height)
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


def use_row_sampler(value: torch.Tensor) -> bool:
    """Whether MSDeformAttn samples with :func:`sample_rows_and_weight` rather than grid_sample: on the CPU,
    without autograd (inference), outside ONNX export and tracing. Under autograd grid_sample stays:
    embedding_bag's backward (a sort of all 4 * L * P * B row indices, then a dense scatter) made a
    training step of the tiny config 15% slower (bench/README.md, "A faster main job")."""
    return (
        value.device.type == "cpu"
        and not (torch.is_grad_enabled() and value.requires_grad)
        and not torch.onnx.is_in_onnx_export()
        and not torch.jit.is_tracing()
    )


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

        m, num_levels, num_points = self.n_heads, self.n_levels, self.n_points
        head_dim = self.d_model // m
        shapes, starts = check_spatial_shapes(input_spatial_shapes, input_level_start_index, s)

        value = self.value_proj(input_flatten)  # [N, S, C]
        if input_padding_mask is not None:
            if tuple(input_padding_mask.shape) != (n, s) or input_padding_mask.dtype != torch.bool:
                raise ValueError(
                    f"input_padding_mask must be bool [{n}, {s}], got {input_padding_mask.dtype} "
                    f"{tuple(input_padding_mask.shape)}"
                )
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        if use_row_sampler(value):
            return self.output_proj(self._attend_rows(query, reference_points, value, shapes, starts))
        value_t = value.view(n, s, m, head_dim).permute(0, 2, 3, 1).reshape(n * m, head_dim, s)  # [N*M, D, S]

        offsets, logits = self.project_query(query, input_spatial_shapes)
        # offsets: [N, Lq, M, L, P, 2], already in grid_sample's units; logits: [N, Lq, M, L*P]
        # grid = (2 * reference - 1) + offset: the location of Deformable DETR, ref + offset_px / (W, H),
        # mapped to [-1, 1]: the same arithmetic, re-associated (tests/modeling/pixel_decoder/test_ms_deform_attn.py).
        base = (2.0 * reference_points - 1.0).to(value.dtype)  # [N, Lq, L, 2]
        grids = offsets.permute(0, 2, 3, 4, 1, 5).contiguous()  # [N, M, L, P, Lq, 2]
        grids = grids.add_(base.permute(0, 2, 1, 3)[:, None, :, None]).flatten(0, 1)  # [N*M, L, P, Lq, 2]
        weights = logits.permute(0, 2, 3, 1).softmax(2)  # [N, M, L*P, Lq], softmax jointly over L x P
        weights = weights.reshape(n * m, num_levels, num_points, lq)  # [N*M, L, P, Lq]

        output = sample_and_weight(value_t, shapes, starts, grids, weights)  # [N*M, D, Lq]
        output = output.view(n, m * head_dim, lq).transpose(1, 2)  # [N, Lq, C] (a view)
        return self.output_proj(output)  # [N, Lq, C]

    def _attend_rows(self, query: torch.Tensor, reference_points: torch.Tensor, value: torch.Tensor,
                     shapes: List[List[int]], starts: List[int]) -> torch.Tensor:
        """The CPU sampler: query [N, Lq, C], reference_points [N, Lq, L, 2], value [N, S, C] -> [N, Lq, C]
        before the output projection.

        The sampling location in pixels of level l is ``ref * (W_l, H_l) - 0.5 + offset``: Deformable DETR's
        ``ref + offset / (W_l, H_l)`` mapped by grid_sample's ``align_corners=False`` rule, re-associated.
        """
        n, lq, _ = query.shape
        m, num_levels, num_points = self.n_heads, self.n_levels, self.n_points
        offsets, logits = self.project_query(query, None)  # [N, Lq, M, L, P, 2] in pixels; [N, Lq, M, L*P]
        cols = num_levels * num_points
        size = torch.tensor([[w, h] for h, w in shapes], device=value.device, dtype=offsets.dtype)  # [L, 2]
        base = reference_points.to(offsets.dtype) * size - 0.5  # [N, Lq, L, 2]
        base = base.repeat_interleave(num_points, dim=2)[:, :, None]  # [N, Lq, 1, L*P, 2]
        offsets = offsets.reshape(n, lq, m, cols, 2)  # a view
        pixel_x = offsets[..., 0] + base[..., 0]  # [N, Lq, M, L*P]
        pixel_y = offsets[..., 1] + base[..., 1]  # [N, Lq, M, L*P]
        # softmax jointly over L x P, computed with Lq innermost (a softmax over a last axis of only L*P
        # entries is several times slower on the CPU), then viewed back
        weights = logits.permute(0, 2, 3, 1).softmax(2).permute(0, 3, 1, 2)  # [N, Lq, M, L*P]
        value = value.view(n, value.shape[1], m, self.d_model // m)  # [N, S, M, D]
        return sample_rows_and_weight(value, shapes, starts, pixel_x, pixel_y, weights)  # [N, Lq, C]

    def project_query(self, query: torch.Tensor,
                      spatial_shapes: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Sampling offsets and attention logits from the query, in ONE matrix product.

        The two linear layers (``sampling_offsets``, ``attention_weights``, kept as separate parameters so
        that checkpoints of Deformable DETR / Mask2Former layout load unchanged) are concatenated row-wise
        for the product. With ``spatial_shapes`` given (the grid_sample sampler), the offset rows are
        scaled first by 2 / W_l (x) and 2 / H_l (y): a pixel offset of level l becomes an offset in
        grid_sample's [-1, 1] coordinates, so no division per sample is left (Deformable DETR's
        ``offset / (W_l, H_l)``, times the 2 of the [0, 1] -> [-1, 1] map). With None (the row sampler)
        the offsets stay in pixels of each level, as the layer predicts them.

        Args:
            query: [N, Lq, C].
            spatial_shapes: [L, 2] (H_l, W_l), or None.

        Returns:
            (offsets [N, Lq, M, L, P, 2] in [-1, 1] units, or in pixels when ``spatial_shapes`` is None;
            logits [N, Lq, M, L * P] before the softmax).
        """
        m, num_levels, num_points = self.n_heads, self.n_levels, self.n_points
        n, lq, _ = query.shape
        weight_off = self.sampling_offsets.weight  # [M*L*P*2, C]
        bias_off = self.sampling_offsets.bias  # [M*L*P*2]
        if spatial_shapes is not None:
            scale = 2.0 / spatial_shapes.flip(-1).to(weight_off.dtype)  # [L, 2] as (2/W, 2/H)
            scale = scale.view(1, num_levels, 1, 2).expand(m, num_levels, num_points, 2).reshape(-1)  # [M*L*P*2]
            weight_off, bias_off = weight_off * scale[:, None], bias_off * scale
        weight = torch.cat([weight_off, self.attention_weights.weight])  # [M*L*P*3, C]
        bias = torch.cat([bias_off, self.attention_weights.bias])  # [M*L*P*3]
        projected = linear(query, weight, bias)  # [N, Lq, M*L*P*3]
        n_off = m * num_levels * num_points * 2
        offsets = projected[..., :n_off].view(n, lq, m, num_levels, num_points, 2)
        logits = projected[..., n_off:].view(n, lq, m, num_levels * num_points)
        return offsets, logits
