"""The operators of :mod:`aqformer_d2.modeling.ops` written literally: slow, simple, for tests and comparisons.

Each function has the signature and result of its fast counterpart; the fast ones must agree with these up
to float round-off (tests/modeling/ops/).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
from torch.nn import functional as F

__all__ = ["ACTIVATIONS", "check_activation", "linear_reference", "ms_deform_attn_reference"]


def ms_deform_attn_reference(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """:func:`~aqformer_d2.modeling.ops.ms_deform_attn` level by level, as Deformable DETR writes it:
    grid_sample every level at all its points, stack the samples of all levels and points, multiply by the
    weights and sum.

    Args:
        value: [N, S, M, D]; spatial_shapes: [L, 2] (H_l, W_l); level_start_index: [L];
        sampling_locations: [N, Lq, M, L, P, 2] normalised (x, y); attention_weights: [N, Lq, M, L, P].

    Returns:
        [N, Lq, M * D].
    """
    n, _, m, d = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    grids = 2.0 * sampling_locations - 1.0  # [N, Lq, M, L, P, 2] in grid_sample's [-1, 1]
    samples = []
    for level, ((h, w), start) in enumerate(zip(spatial_shapes.tolist(), level_start_index.tolist())):
        value_l = value[:, start:start + h * w]  # [N, H*W, M, D]
        value_l = value_l.permute(0, 2, 3, 1).reshape(n * m, d, h, w)  # [N*M, D, H, W]
        grid_l = grids[:, :, :, level].transpose(1, 2).reshape(n * m, lq, num_points, 2)  # [N*M, Lq, P, 2]
        samples.append(F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros",
                                     align_corners=False))  # [N*M, D, Lq, P]
    stacked = torch.stack(samples, dim=3)  # [N*M, D, Lq, L, P]
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, num_levels, num_points)  # [N*M, 1, Lq, L, P]
    output = (stacked * weights).sum(dim=(3, 4))  # [N*M, D, Lq]
    return output.view(n, m * d, lq).transpose(1, 2).contiguous()  # [N, Lq, M*D]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


#: activation name -> the element-wise function applied to the product
ACTIVATIONS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"none": _identity, "relu": F.relu, "gelu": F.gelu}


def check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"linear: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")


def linear_reference(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                     activation: str = "none") -> torch.Tensor:
    """act(x W^T + b) with ``F.linear``, the activation applied afterwards: x [..., K], weight [O, K],
    bias [O] -> [..., O]; ``activation`` one of :data:`ACTIVATIONS`."""
    check_activation(activation)
    return ACTIVATIONS[activation](F.linear(x, weight, bias))
