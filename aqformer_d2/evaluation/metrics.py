"""AVSBench metrics M_J (mask IoU) and M_F (F-measure), as pure functions on torch / numpy.

Exactly the official definitions (OpenNLPLab/AVSBench ``utils/utility.py``: ``mask_iou`` and
``Eval_Fmeasure``; ``test.py`` averages per test batch of one video):

M_J, per frame: p = prob > 0.5 (= sigmoid(logit) > 0.5), I = sum(p*g), U = sum(max(p, g)); if the
frame's ground truth is empty, I = sum((1-p)*(1-g)) and U = H*W (a correct empty prediction scores 1);
IoU = I / (U + 1e-7). Mean over the frames of a video, then mean over videos.

M_F, per video: 255 thresholds linspace(0, 1 - 1e-10, 255) (float32, as torch.linspace), positive
where prob >= threshold; frames with an all-zero ground truth are skipped; per frame and threshold
P = TP / (#pos + 1e-20), R = TP / (#gt + 1e-20), F = (1 + 0.3) P R / (0.3 P + R), NaN -> 0; the F
curves are averaged over the video's valid frames and the max over thresholds is the video's score.
A video without a valid frame scores 0. M_F is the mean over videos.

Computation is in float64 (the official code uses float32; differences are rounding only).
Shapes: N frames of H x W pixels.
"""
from __future__ import annotations

from typing import Tuple, Union

import numpy as np
import torch

__all__ = [
    "IOU_EPS",
    "FSCORE_BETA2",
    "FSCORE_NUM_THRESHOLDS",
    "fscore_thresholds",
    "binarize",
    "mask_iou_per_frame",
    "miou_per_video",
    "threshold_counts",
    "fscore_curve_from_counts",
    "fscore_curves_per_frame",
    "fscore_per_video",
]

ArrayLike = Union[torch.Tensor, np.ndarray]

IOU_EPS = 1e-7
FSCORE_BETA2 = 0.3
FSCORE_NUM_THRESHOLDS = 255
_PR_EPS = 1e-20
# Official probability threshold of M_J (sigmoid(logit) > 0.5).
IOU_PROB_THRESHOLD = 0.5


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    return torch.from_numpy(np.asarray(x)) if isinstance(x, np.ndarray) else x


def _check_nhw(name: str, x: torch.Tensor) -> None:
    if x.dim() != 3:
        raise ValueError(f"{name} must be [N, H, W], got shape {list(x.shape)}.")


def fscore_thresholds(num: int = FSCORE_NUM_THRESHOLDS) -> torch.Tensor:
    """``torch.linspace(0, 1 - 1e-10, num)`` in float32, as in the official ``_eval_pr`` ([num])."""
    return torch.linspace(0, 1 - 1e-10, num, dtype=torch.float32)


def binarize(probs: ArrayLike, threshold: float = IOU_PROB_THRESHOLD) -> torch.Tensor:
    """Foreground mask ``probs > threshold`` (bool, same shape)."""
    return _as_tensor(probs) > threshold


def mask_iou_per_frame(pred: ArrayLike, gt: ArrayLike, eps: float = IOU_EPS) -> torch.Tensor:
    """Official per-frame IoU with the empty-ground-truth rule.

    Args:
        pred: binary prediction ``[N, H, W]`` (bool or {0, 1}); binarise probabilities with :func:`binarize`.
        gt: binary ground truth ``[N, H, W]`` (non-zero = foreground).

    Returns:
        float64 ``[N]`` IoU per frame.
    """
    p, g = _as_tensor(pred), _as_tensor(gt)
    _check_nhw("pred", p)
    if p.shape != g.shape:
        raise ValueError(f"pred {list(p.shape)} and gt {list(g.shape)} differ in shape.")
    p = (p != 0).flatten(1).to(torch.float64)  # [N, H*W]
    g = (g != 0).flatten(1).to(torch.float64)  # [N, H*W]
    inter = (p * g).sum(1)  # [N]
    union = torch.maximum(p, g).sum(1)  # [N]
    empty = g.sum(1) == 0  # [N]
    inter_empty = ((1 - p) * (1 - g)).sum(1)  # [N]
    inter = torch.where(empty, inter_empty, inter)
    union = torch.where(empty, torch.full_like(union, p.shape[1]), union)
    return inter / (union + eps)


def miou_per_video(probs: ArrayLike, gt: ArrayLike) -> float:
    """M_J of one video: mean over its N frames of :func:`mask_iou_per_frame` (probs > 0.5)."""
    return float(mask_iou_per_frame(binarize(probs), gt).mean())


def threshold_counts(probs: ArrayLike, gt: ArrayLike, num: int = FSCORE_NUM_THRESHOLDS) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-threshold counts of one frame, computed in one pass.

    Args:
        probs: ``[H, W]`` foreground probabilities (compared in float32, as the official code).
        gt: ``[H, W]`` binary ground truth.

    Returns:
        ``(tp, pos)``: int64 ``[num]``: for threshold k, TP = #(prob >= thr_k and gt), pos = #(prob >= thr_k).
    """
    s = _as_tensor(probs).to(torch.float32).flatten()  # [H*W]
    g = (_as_tensor(gt) != 0).flatten()  # [H*W]
    if s.numel() != g.numel():
        raise ValueError(f"probs ({s.numel()} pixels) and gt ({g.numel()} pixels) differ in size.")
    thr = fscore_thresholds(num)  # [num]
    # n_k(pixel) = number of thresholds <= prob: the pixel is positive for thresholds 0 .. n_k - 1.
    n = torch.searchsorted(thr, s, right=True)  # [H*W] in 0..num
    hist = torch.bincount(n, minlength=num + 1)  # [num + 1]
    hist_tp = torch.bincount(n[g], minlength=num + 1)  # [num + 1]
    # positives at threshold k = pixels with n > k = reversed cumulative sum of hist[k+1:]
    pos = hist.flip(0).cumsum(0).flip(0)[1:]  # [num]
    tp = hist_tp.flip(0).cumsum(0).flip(0)[1:]  # [num]
    return tp.to(torch.int64), pos.to(torch.int64)


def fscore_curve_from_counts(tp: ArrayLike, pos: ArrayLike, num_gt: ArrayLike, beta2: float = FSCORE_BETA2) -> torch.Tensor:
    """F-measure curve from counts: P = TP/(pos + 1e-20), R = TP/(#gt + 1e-20), NaN -> 0 (float64, tp's shape)."""
    tp = _as_tensor(tp).to(torch.float64)
    pos = _as_tensor(pos).to(torch.float64)
    num_gt = torch.as_tensor(num_gt, dtype=torch.float64)
    prec = tp / (pos + _PR_EPS)
    rec = tp / (num_gt + _PR_EPS)
    f = (1 + beta2) * prec * rec / (beta2 * prec + rec)
    return torch.nan_to_num(f, nan=0.0)


def fscore_curves_per_frame(probs: ArrayLike, gt: ArrayLike, num: int = FSCORE_NUM_THRESHOLDS) -> Tuple[torch.Tensor, torch.Tensor]:
    """F curves of the frames with a non-empty ground truth.

    Args:
        probs: ``[N, H, W]`` probabilities; gt: ``[N, H, W]`` binary.

    Returns:
        ``(curves float64 [N, num], valid bool [N])``; rows of empty-ground-truth frames are zero and invalid.
    """
    s, g = _as_tensor(probs), _as_tensor(gt)
    _check_nhw("probs", s)
    if s.shape != g.shape:
        raise ValueError(f"probs {list(s.shape)} and gt {list(g.shape)} differ in shape.")
    curves = torch.zeros((s.shape[0], num), dtype=torch.float64)  # [N, num]
    valid = (g != 0).flatten(1).any(1)  # [N]
    for i in range(s.shape[0]):
        if valid[i]:
            tp, pos = threshold_counts(s[i], g[i], num)
            curves[i] = fscore_curve_from_counts(tp, pos, int((g[i] != 0).sum()))
    return curves, valid


def fscore_per_video(probs: ArrayLike, gt: ArrayLike, num: int = FSCORE_NUM_THRESHOLDS) -> float:
    """M_F of one video: max over thresholds of the mean F curve of its valid frames; 0 without a valid frame."""
    curves, valid = fscore_curves_per_frame(probs, gt, num)
    if not bool(valid.any()):
        return 0.0
    return float(curves[valid].mean(0).max())
