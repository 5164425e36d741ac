"""Hungarian matching of one frame's N queries to its ground-truth class masks (AVSS head).

Beyond the paper (docs/paper_choices.md, "Beyond the paper: AVSS"): Mask2Former's matcher, applied per frame.
Definitions first, then the pure functions:

* target j of a frame: one class c_j present in the frame's label map (background is a class) and its binary
  mask y_j = [label == c_j]; pixels labelled with the ignore value belong to no target and count nowhere
  (weight w = 0, else 1);
* cost of query i for target j:
  ``C_ij = λ_cls * (-p_i(c_j)) + λ_mask * BCE_ij + λ_dice * Dice_ij`` with p_i = softmax over the K+1 classes,
  ``BCE_ij = Σ_x w_x BCE(m_i(x), y_j(x)) / Σ_x w_x`` (m_i: mask logits), and
  ``Dice_ij = 1 - (2 Σ_x w_x σ(m_i) y_j + 1) / (Σ_x w_x σ(m_i) + Σ_x w_x y_j + 1)``;
* the matching minimises Σ C over one-to-one assignments of targets to queries (scipy's
  ``linear_sum_assignment``); with N >= M every target gets a query.

Shapes: N queries, M targets, P pixels (flattened), K classes.
"""
from typing import Tuple

import torch
from scipy.optimize import linear_sum_assignment
from torch.nn import functional as F

__all__ = ["frame_targets", "matching_cost", "match_frame"]


def frame_targets(labels: torch.Tensor, ignore_value: int, num_classes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The targets of one frame.

    Args:
        labels: int64 [H, W], class indices in 0..K-1 or ``ignore_value``.
        ignore_value: label of pixels that carry no supervision.
        num_classes: K (a label outside 0..K-1 that is not the ignore value is an error).

    Returns:
        (classes int64 [M] in increasing order, masks bool [M, H, W]).
    """
    classes = torch.unique(labels)
    classes = classes[classes != ignore_value]
    if classes.numel() and (classes.min() < 0 or classes.max() >= num_classes):
        raise ValueError(
            f"frame_targets: labels hold classes {classes.tolist()}, outside 0..{num_classes - 1} and not the "
            f"ignore value {ignore_value}"
        )
    return classes, labels[None] == classes[:, None, None]


@torch.no_grad()
def matching_cost(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    target_classes: torch.Tensor,
    target_masks: torch.Tensor,
    pixel_weight: torch.Tensor,
    cost_class: float,
    cost_mask: float,
    cost_dice: float,
) -> torch.Tensor:
    """C of the module docstring.

    Args:
        class_logits: [N, K+1].
        mask_logits: [N, P].
        target_classes: int64 [M].
        target_masks: [M, P] in {0, 1} (any dtype).
        pixel_weight: [P], 1 for supervised pixels, 0 for ignored ones.
        cost_class, cost_mask, cost_dice: λ_cls, λ_mask, λ_dice.

    Returns:
        float32 (or the logits' wider type) [N, M].
    """
    dtype = torch.promote_types(mask_logits.dtype, torch.float32)
    logits = mask_logits.to(dtype)  # [N, P]
    targets = target_masks.to(dtype) * pixel_weight.to(dtype)  # [M, P], zero on ignored pixels
    weight = pixel_weight.to(dtype)[None]  # [1, P]
    probs = class_logits.to(dtype).softmax(-1)  # [N, K+1]
    class_cost = -probs[:, target_classes]  # [N, M]
    # BCE(m, y) = softplus(-m) y + softplus(m) (1 - y): two products over the weighted pixels
    pos = F.softplus(-logits) * weight  # [N, P]
    neg = F.softplus(logits) * weight  # [N, P]
    total = weight.sum().clamp(min=1.0)
    bce_cost = (pos @ targets.T + neg @ (weight - targets).T) / total  # [N, M]; (w - w y) = w (1 - y)
    sig = logits.sigmoid() * weight  # [N, P]
    numerator = 2.0 * (sig @ targets.T) + 1.0  # [N, M]
    denominator = sig.sum(-1)[:, None] + targets.sum(-1)[None, :] + 1.0  # [N, M]
    dice_cost = 1.0 - numerator / denominator
    return cost_class * class_cost + cost_mask * bce_cost + cost_dice * dice_cost


@torch.no_grad()
def match_frame(cost: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost one-to-one assignment: cost [N, M] -> (query indices int64 [min(N, M)], target indices
    int64 [min(N, M)]), sorted by query index."""
    if cost.dim() != 2:
        raise ValueError(f"match_frame: cost must be [N, M], got {tuple(cost.shape)}")
    if not torch.isfinite(cost).all():
        raise ValueError("match_frame: the matching cost has non-finite entries (non-finite logits?)")
    rows, cols = linear_sum_assignment(cost.detach().cpu().double().numpy())
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)
