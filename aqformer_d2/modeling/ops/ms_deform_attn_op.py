"""Multi-scale deformable attention's sampling operator (Zhu et al., Deformable DETR, ICLR 2021) in pure
PyTorch: :func:`ms_deform_attn`, with the signature and semantics of Mask2Former's
``ms_deform_attn_core_pytorch`` (plus ``level_start_index``, as its CUDA operator takes it).

    out[n, q, m] = sum_l sum_p A[n, q, m, l, p] * bilinear(V_l[n, :, m], loc[n, q, m, l, p])

Bilinear sampling as ``F.grid_sample`` with ``align_corners=False`` and zero padding, the arithmetic of the
published CUDA operator: a normalised location ``(x, y)`` in ``[0, 1]`` is the continuous pixel coordinate
``(x * W_l - 0.5, y * H_l - 0.5)``, and bilinear corners outside the map contribute zero. The same code runs on
CPU and GPU; there is no compiled extension.

Three variants compute it (:mod:`.deform_sampling`); :data:`VARIANTS` picks the first whose condition holds:

=================  ========================================================================================
variant            runs when
=================  ========================================================================================
``rows``           value on the CPU, not under autograd (inference), not exporting to ONNX, not tracing:
                   one ``F.embedding_bag`` gathers the four bilinear corners of every point as value rows
``grid_autograd``  autograd records (grad mode on and value, locations or weights require grad):
                   ``grid_sample`` per level, points summed by ``PointWeightedSum`` (own backward)
``grid_in_place``  otherwise (GPU inference, ONNX export, tracing): ``grid_sample`` per level, points
                   accumulated in place into one buffer
=================  ========================================================================================

Why: ``grid_sample`` gathers every channel of every corner separately from an [N*M, D, H, W] copy and was 32%
of the pixel decoder's CPU time; the row gather reads each corner as one contiguous row. Under autograd
``grid_sample`` stays: embedding_bag's backward for the value (a sort of all 4 * L * P * N * Lq * M row
indices, then a dense scatter) made a training step of the tiny config 15% slower. ONNX export and tracing
keep ``grid_sample``, which has an ONNX operator (bench/README.md, "A faster main job").

Symbols: N batch, Lq queries, S = sum_l H_l * W_l flattened values, M heads, D channels per head, L levels,
P sampling points per head and level.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple

import torch

from .deform_sampling import (
    accumulate_in_place,
    accumulate_with_autograd,
    gather_rows_and_weight,
    grid_sample_and_weight,
)

__all__ = ["VARIANTS", "Variant", "check_ms_deform_attn_inputs", "check_spatial_shapes", "ms_deform_attn",
           "ms_deform_attn_variant"]


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


def check_ms_deform_attn_inputs(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> Tuple[List[List[int]], List[int]]:
    """Check the shapes of :func:`ms_deform_attn`'s arguments against each other; returns
    :func:`check_spatial_shapes`' (shapes, starts)."""
    if value.dim() != 4:
        raise ValueError(f"value must be [N, S, M, D], got {tuple(value.shape)}")
    n, s, m, _ = value.shape
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
    if num_levels < 1 or num_points < 1:
        raise ValueError(f"ms_deform_attn needs at least one level and one point, got L={num_levels}, P={num_points}")
    shapes, starts = check_spatial_shapes(spatial_shapes, level_start_index, s)
    if len(shapes) != num_levels:
        raise ValueError(f"spatial_shapes has {len(shapes)} levels but sampling_locations has {num_levels}")
    return shapes, starts


def _records_autograd(value: torch.Tensor, locations: torch.Tensor, weights: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (value.requires_grad or locations.requires_grad or weights.requires_grad)


def _rows_apply(value: torch.Tensor, locations: torch.Tensor, weights: torch.Tensor) -> bool:
    # Only the value's gradient makes the row gather slow (embedding_bag's backward for the table); with a
    # value outside autograd the locations and weights may still receive gradients through the corner weights.
    return (
        value.device.type == "cpu"
        and not (torch.is_grad_enabled() and value.requires_grad)
        and not torch.onnx.is_in_onnx_export()
        and not torch.jit.is_tracing()
    )


def _always(value: torch.Tensor, locations: torch.Tensor, weights: torch.Tensor) -> bool:
    return True


def _grid_variant(point_sum) -> Callable[..., torch.Tensor]:
    """The grid_sample variant with the given sum over the points (see :func:`grid_sample_and_weight`)."""

    def run(value: torch.Tensor, shapes: Sequence[Sequence[int]], starts: Sequence[int],
            locations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        n, s, m, d = value.shape
        _, lq, _, num_levels, num_points, _ = locations.shape
        value_t = value.permute(0, 2, 3, 1).reshape(n * m, d, s)  # [N*M, D, S], one copy for all levels
        # grid_sample's [-1, 1] coordinates (align_corners=False: -1/+1 are the outer pixel edges), laid out
        # [N, M, L, P, Lq, 2] so that every level's grid is one contiguous [N*M, P, Lq, 2] block
        grids = torch.addcmul(locations.new_tensor(-1.0), locations, locations.new_tensor(2.0))  # 2 * loc - 1
        grids = grids.permute(0, 2, 3, 4, 1, 5).to(value.dtype).contiguous().flatten(0, 1)  # [N*M, L, P, Lq, 2]
        weights = weights.permute(0, 2, 3, 4, 1).reshape(n * m, num_levels, num_points, lq)  # [N*M, L, P, Lq]
        output = grid_sample_and_weight(value_t, shapes, starts, grids, weights.to(value.dtype), point_sum)
        return output.view(n, m * d, lq).transpose(1, 2)  # [N*M, D, Lq] -> [N, Lq, M*D] (a view)

    return run


@dataclass(frozen=True)
class Variant:
    """One way of computing :func:`ms_deform_attn`: ``applies(value, locations, weights)`` says whether it
    runs; ``run(value, shapes, starts, locations, weights)`` computes [N, Lq, M * D]."""

    name: str
    applies: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], bool]
    run: Callable[..., torch.Tensor]


#: In order: the first variant whose ``applies`` holds runs (the table in the module docstring).
VARIANTS: Tuple[Variant, ...] = (
    Variant("rows", _rows_apply, gather_rows_and_weight),
    Variant("grid_autograd", _records_autograd, _grid_variant(accumulate_with_autograd)),
    Variant("grid_in_place", _always, _grid_variant(accumulate_in_place)),
)


def _choose(value: torch.Tensor, locations: torch.Tensor, weights: torch.Tensor) -> Variant:
    return next(variant for variant in VARIANTS if variant.applies(value, locations, weights))


def ms_deform_attn_variant(value: torch.Tensor, sampling_locations: torch.Tensor,
                           attention_weights: torch.Tensor) -> str:
    """Name of the variant :func:`ms_deform_attn` runs for these inputs in the current mode."""
    return _choose(value, sampling_locations, attention_weights).name


def ms_deform_attn(
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
        [N, Lq, M * D] (from the grid variants a transposed view of [N, M * D, Lq] storage).

    Any strides are accepted. The grid variants read the weights fastest when they are a view of
    [N, M, L, P, Lq] storage (what :class:`~aqformer_d2.modeling.pixel_decoder.MSDeformAttn` passes).
    """
    shapes, starts = check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                                                 attention_weights)
    variant = _choose(value, sampling_locations, attention_weights)
    return variant.run(value, shapes, starts, sampling_locations, attention_weights)
