"""The official AVSBench-semantic (AVSS) metric, as pure functions on numpy / torch.

Exactly the definition of OpenNLPLab/AVSBench ``avs_scripts/avss/utils/compute_color_metrics.py``
(``_batch_miou_fscore``) and ``test.py``, with K classes (71 on AVSBench-semantic, background = 0
included):

1. Per frame: predicted class = argmax over the K score channels (first maximum on ties);
   class areas by histogram over 0..K-1: A_pred[k], A_gt[k], A_inter[k] = #(pred = gt = k),
   A_union[k] = A_pred[k] + A_gt[k] - A_inter[k].
2. Per frame and class: IoU[k] = A_inter / (A_union + 2.220446049250313e-16) (0 when the class is in
   neither map); P = A_inter / A_pred, R = A_inter / A_gt,
   F[k] = (1 + beta^2) P R / (beta^2 P + R) with beta^2 = 0.3, NaN -> 0 (so F = 0 whenever
   A_inter = 0). The class *counts* for the frame when A_union[k] > 0.
3. Per class over a test set: IoU_c = sum over frames of IoU[k] / number of frames where it counted;
   same for F_c. 0 / 0 (a class that never counts) -> NaN -> 0.
4. mIoU = mean of IoU_c over ALL K classes, background included (a class absent everywhere
   contributes 0); Fscore likewise.

Also: ``mIoU_noBg`` = mean over classes 1..K-1 (background left out), and ``mIoU_script_noBg`` =
mean over classes 0..K-2, which is what the official test.py prints as "miou_noBg" (it drops
the last index, written when background was index 70; AVSBench issue #23).

Computation is in float64 (the official code uses float32; the difference is rounding only).
Shapes: N frames of H x W pixels, K classes.
"""
from __future__ import annotations

from typing import Dict, Tuple, Union

import numpy as np
import torch

__all__ = [
    "AVSS_IOU_EPS",
    "AVSS_FSCORE_BETA2",
    "argmax_labels",
    "class_areas",
    "frame_iou_fscore",
    "class_sums",
    "avss_scores",
]

ArrayLike = Union[np.ndarray, torch.Tensor]

# float64 machine epsilon, the official script's guard on the union.
AVSS_IOU_EPS = 2.220446049250313e-16
AVSS_FSCORE_BETA2 = 0.3


def _np(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def argmax_labels(scores: ArrayLike) -> np.ndarray:
    """Predicted class map: int64 ``[N, H, W]`` = argmax over K of scores ``[N, K, H, W]`` (first maximum)."""
    s = _np(scores)
    if s.ndim != 4:
        raise ValueError(f"scores must be [N, K, H, W], got shape {list(s.shape)}.")
    return s.argmax(axis=1).astype(np.int64)


def class_areas(pred: ArrayLike, gt: ArrayLike, num_classes: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame class areas by histogram.

    Args:
        pred: int class map ``[N, H, W]`` in 0..K-1.
        gt: int class map ``[N, H, W]`` in 0..K-1.
        num_classes: K.

    Returns:
        ``(inter, area_pred, area_gt)``: int64 ``[N, K]`` each.
    """
    p, g = _np(pred).astype(np.int64), _np(gt).astype(np.int64)
    if p.ndim != 3 or p.shape != g.shape:
        raise ValueError(f"pred {list(p.shape)} and gt {list(g.shape)} must both be [N, H, W].")
    for name, x in (("pred", p), ("gt", g)):
        if x.size and (x.min() < 0 or x.max() >= num_classes):
            raise ValueError(f"{name} has class indices outside 0..{num_classes - 1} (min {x.min()}, max {x.max()}).")
    n = p.shape[0]
    offset = (np.arange(n, dtype=np.int64) * num_classes)[:, None, None]  # [N, 1, 1]: one histogram per frame
    size = n * num_classes
    area_pred = np.bincount((p + offset).ravel(), minlength=size).reshape(n, num_classes)  # [N, K]
    area_gt = np.bincount((g + offset).ravel(), minlength=size).reshape(n, num_classes)  # [N, K]
    hit = p == g  # [N, H, W]
    inter = np.bincount((p + offset)[hit], minlength=size).reshape(n, num_classes)  # [N, K]
    return inter, area_pred, area_gt


def frame_iou_fscore(
    inter: ArrayLike, area_pred: ArrayLike, area_gt: ArrayLike, beta2: float = AVSS_FSCORE_BETA2
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame, per-class IoU and F-score (step 2).

    Args:
        inter, area_pred, area_gt: class areas ``[N, K]`` (:func:`class_areas`).

    Returns:
        ``(iou, fscore, counted)``: float64 ``[N, K]``, float64 ``[N, K]``, bool ``[N, K]`` (union > 0).
    """
    i = _np(inter).astype(np.float64)
    p = _np(area_pred).astype(np.float64)
    g = _np(area_gt).astype(np.float64)
    union = p + g - i  # [N, K]
    iou = i / (union + AVSS_IOU_EPS)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = i / p
        recall = i / g
        f = (1 + beta2) * precision * recall / (beta2 * precision + recall)
    f[np.isnan(f)] = 0.0
    return iou, f, union > 0


def class_sums(inter: ArrayLike, area_pred: ArrayLike, area_gt: ArrayLike) -> Dict[str, np.ndarray]:
    """Sums over N frames that the set-level metric needs (what processes add together).

    Returns:
        ``{"iou_sum": float64 [K], "f_sum": float64 [K], "count": int64 [K] (frames where the class
        counted: union > 0), "gt_frames": int64 [K] (frames where the class is in the ground truth)}``.
    """
    iou, f, counted = frame_iou_fscore(inter, area_pred, area_gt)
    return {
        "iou_sum": iou.sum(axis=0),
        "f_sum": f.sum(axis=0),
        "count": counted.sum(axis=0).astype(np.int64),
        "gt_frames": (_np(area_gt) > 0).sum(axis=0).astype(np.int64),
    }


def avss_scores(iou_sum: ArrayLike, f_sum: ArrayLike, count: ArrayLike) -> Dict[str, object]:
    """Set-level AVSS scores (steps 3-4) from per-class sums ``[K]`` (index 0 = background).

    Returns:
        ``{"IoU": float64 [K], "F": float64 [K], "mIoU", "Fscore", "mIoU_noBg", "Fscore_noBg",
        "mIoU_script_noBg", "Fscore_script_noBg"}`` (per-class arrays and floats).
    """
    c = _np(count).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou_c = _np(iou_sum).astype(np.float64) / c
        f_c = _np(f_sum).astype(np.float64) / c
    iou_c[np.isnan(iou_c)] = 0.0
    f_c[np.isnan(f_c)] = 0.0
    return {
        "IoU": iou_c,
        "F": f_c,
        "mIoU": float(iou_c.mean()),
        "Fscore": float(f_c.mean()),
        "mIoU_noBg": float(iou_c[1:].mean()),
        "Fscore_noBg": float(f_c[1:].mean()),
        "mIoU_script_noBg": float(iou_c[:-1].mean()),
        "Fscore_script_noBg": float(f_c[:-1].mean()),
    }
