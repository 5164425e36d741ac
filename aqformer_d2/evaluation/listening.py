"""Does the model stay silent when nothing on screen sounds? Negative-audio metrics as pure functions,
and a DatasetEvaluator that collects them per clip.

Definitions (a clip has T frames; a frame's prediction is ``probs > threshold``, the model's
``MODEL.AQFORMER.MASK_THRESHOLD``; on negative audio the ground truth is empty in every frame):

* false-positive rate ``FPR``: the share of negative-audio frames with ANY predicted foreground pixel.
  (One stray pixel counts: a user asking "is something sounding here?" gets a yes.)
* mean foreground area ``area``: the mean over negative-audio frames of the share of pixels predicted
  foreground. This is what AVSBench-Robust's evaluation code calls FPR (``calculate_FPR`` in
  jiali-home/AVSBench-Robust ``training_evaluation/code/AVSegFormer/scripts/s4/test.py``: sigmoid > 0.5,
  activated pixels / (H*W), averaged over frames; Li et al., "Do Audio-Visual Segmentation Models Truly
  Segment Sounding Objects?", arXiv 2502.00358).
* frames with foreground above a minimum area ``FPR_a``: the share of negative-audio frames whose predicted
  foreground share exceeds ``a`` (``FPR_0`` is FPR). Not a goal metric: it tells a stray fragment (a few
  pixels) from a mask the size of an object, i.e. how a user would see the false positives.
* the minimum-area rule ``min_area = a`` (off by default, ``a = 0``): a frame whose predicted foreground share
  is at most ``a`` is emptied (:func:`drop_small_masks`). A post-processing a deployment may choose, not part
  of the model: with it, a negative condition's FPR equals ``FPR_a`` without it, and on positives the frames
  whose mask was that small lose it (their IoU drops to 0 where the ground truth has an object).
* listening score ``S = 2 M_J (1 - FPR) / (M_J + 1 - FPR)``: the harmonic mean of the positive M_J (own
  audio, official definition) and ``1 - FPR`` on a negative condition; 0 when both are 0. Always
  predicting foreground gives FPR = 1 and S = 0; never predicting gives M_J = 0 on frames with a sounding
  object and S near 0 (M_J is 1 only on positive frames with an empty ground truth). AVSBench-Robust
  reports "G-mIoU / G-F / G-FPR" aggregated outside its public code (README: "manually aggregated ...
  using Excel"), so their exact formula could not be read; S is OUR definition, in the same spirit.
* frames where nothing sounds under the clip's own audio ``own_empty_gt``: the labelled frames of a clip,
  heard with its own soundtrack, whose ground truth is empty (no object sounds at that time; SynthAVS-MS3
  has such seconds, where the objects stay on screen and only the background noise plays, and AVSBench's
  MS3 annotates empty frames too). The share of them with any predicted foreground is a false-positive
  rate on frames the training distribution already holds, unlike the constructed negatives; its mean
  area is taken over the same frames (:func:`empty_ground_truth_rates`).
* ranges: percentile bootstrap over clips (:func:`bootstrap_interval`); clips, not frames, are the
  independent units (the frames of a clip share their objects and audio).

Shapes: N frames of H x W pixels.
"""
from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Callable, List, Sequence, Tuple, Union

import numpy as np
import torch

from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ..data.datasets.register_avsbench import read_avs_mask
from .metrics import binarize, mask_iou_per_frame

__all__ = [
    "foreground_per_frame",
    "false_positive_rate",
    "mean_foreground_area",
    "foreground_frames_above",
    "check_min_area",
    "drop_small_masks",
    "listening_score",
    "empty_ground_truth_rates",
    "bootstrap_interval",
    "ListeningEvaluator",
]

ArrayLike = Union[torch.Tensor, np.ndarray]


def foreground_per_frame(probs: ArrayLike, threshold: float) -> Tuple[np.ndarray, np.ndarray]:
    """Per frame of ``probs`` ``[N, H, W]``: (any pixel > threshold: bool ``[N]``, share of such pixels: float64 ``[N]``)."""
    fg = binarize(probs, threshold)  # [N, H, W] bool
    if fg.dim() != 3:
        raise ValueError(f"probs must be [N, H, W], got shape {list(fg.shape)}")
    flat = fg.flatten(1)  # [N, H*W]
    return flat.any(1).numpy(), flat.to(torch.float64).mean(1).numpy()


def false_positive_rate(any_foreground: Sequence[bool]) -> float:
    """Share of (negative-audio) frames with any predicted foreground: mean of ``any_foreground`` ``[N]``."""
    a = np.asarray(any_foreground, dtype=bool)
    if a.size == 0:
        raise ValueError("false_positive_rate: no frames")
    return float(a.mean())


def mean_foreground_area(area: Sequence[float]) -> float:
    """Mean over frames of the predicted foreground share ``area`` ``[N]`` (AVSBench-Robust's "FPR")."""
    a = np.asarray(area, dtype=np.float64)
    if a.size == 0:
        raise ValueError("mean_foreground_area: no frames")
    return float(a.mean())


def check_min_area(min_area: float, who: str) -> None:
    """Raise ValueError naming ``who`` unless ``min_area`` is a share of the frame in [0, 1)."""
    if not 0.0 <= float(min_area) < 1.0:
        raise ValueError(f"{who}: min_area must be a share of the frame in [0, 1), got {min_area}")


def foreground_frames_above(area: Sequence[float], min_area: float) -> float:
    """``FPR_a``: share of frames whose predicted foreground share ``area`` ``[N]`` exceeds ``min_area`` (in [0, 1))."""
    a = np.asarray(area, dtype=np.float64)
    if a.size == 0:
        raise ValueError("foreground_frames_above: no frames")
    check_min_area(min_area, "foreground_frames_above")
    return float((a > float(min_area)).mean())


def drop_small_masks(labels: ArrayLike, min_area: float) -> ArrayLike:
    """The minimum-area rule (module doc): ``labels`` ``[N, H, W]`` (bool masks, uint8 class labels or
    probabilities already thresholded to {0, 1}; 0 = background) with every frame whose share of non-zero
    pixels is at most ``min_area`` set to 0. Same type (numpy or torch), dtype and shape; a copy.

    Raises:
        ValueError: ``labels`` is not ``[N, H, W]`` or ``min_area`` is not in [0, 1).
    """
    check_min_area(min_area, "drop_small_masks")
    if labels.ndim != 3:
        raise ValueError(f"drop_small_masks: labels must be [N, H, W], got shape {list(labels.shape)}")
    out = labels.clone() if isinstance(labels, torch.Tensor) else np.array(labels, copy=True)
    n = labels.shape[0]
    nonzero = (labels != 0).reshape(n, -1)  # [N, H*W]
    count = nonzero.sum(1)  # [N] foreground pixels per frame
    # float64 count / pixels: the share foreground_per_frame reports, so the rule keeps exactly the frames
    # that foreground_frames_above counts (share > min_area)
    share = (count.to(torch.float64) if isinstance(count, torch.Tensor) else count.astype(np.float64)) / nonzero.shape[1]
    out[share <= float(min_area)] = 0
    return out


def listening_score(positive_miou: float, fpr: float) -> float:
    """Harmonic mean of the positive M_J and ``1 - FPR`` (module doc); 0 when both are 0."""
    for name, v in (("positive_miou", positive_miou), ("fpr", fpr)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"listening_score: {name} must be in [0, 1], got {v}")
    a, b = float(positive_miou), 1.0 - float(fpr)
    return 0.0 if a + b == 0.0 else 2.0 * a * b / (a + b)


def empty_ground_truth_rates(clips: Sequence[dict]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per clip of ``clips`` (:class:`ListeningEvaluator` records of a positive condition) over its frames
    whose ground truth is empty (``"empty_gt"``): (number of such frames ``[N]`` int, how many of them have
    any predicted foreground ``[N]`` int, the sum of their predicted foreground shares ``[N]`` float64).
    The ``own_empty_gt`` FPR of a set of clips is ``fg.sum() / frames.sum()``, its mean area
    ``area.sum() / frames.sum()`` (module doc).

    Raises:
        ValueError: a record has no ``"empty_gt"`` (a negative clip, whose ground truth is empty by
            construction) or one whose length differs from ``"any_fg"``.
    """
    frames, fg, area = [], [], []
    for c in clips:
        empty = c.get("empty_gt")
        if empty is None or len(empty) != len(c["any_fg"]):
            raise ValueError(f"{c.get('video_id', '?')}: empty_gt must list every frame of a positive clip "
                             f"({len(c['any_fg'])}), got {None if empty is None else len(empty)}")
        e = np.asarray(empty, dtype=bool)  # [T]
        frames.append(int(e.sum()))
        fg.append(int(np.asarray(c["any_fg"], dtype=bool)[e].sum()))
        area.append(float(np.asarray(c["area"], dtype=np.float64)[e].sum()))
    return np.array(frames, dtype=np.int64), np.array(fg, dtype=np.int64), np.array(area, dtype=np.float64)


def bootstrap_interval(
    statistic: Callable[[np.ndarray], float], num_clips: int, *, num_resamples: int = 1000, seed: int = 0,
    confidence: float = 0.95,
) -> Tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over clips.

    Args:
        statistic: maps an index array ``[num_clips]`` (clips drawn with replacement) to a number, e.g.
            ``lambda idx: fpr_per_clip[idx].mean()``; paired statistics index several per-clip arrays with
            the same ``idx``, so a clip's positive and negative results are resampled together.
        num_clips: number of clips.
        num_resamples, seed: resamples drawn from ``numpy.random.default_rng(seed)``.
        confidence: coverage of the interval (0.95: the 2.5 and 97.5 percentiles).

    Returns:
        (low, high).
    """
    if num_clips < 1 or num_resamples < 1 or not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap_interval: need num_clips, num_resamples >= 1 and 0 < confidence < 1, got "
                         f"{num_clips}, {num_resamples}, {confidence}")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(num_clips, size=num_clips)) for _ in range(num_resamples)])
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


class ListeningEvaluator(DatasetEvaluator):
    """Per clip: which frames have any predicted foreground and how much, and (clips with their own ground
    truth) the official per-frame IoU. Clips whose input carries ``"negative_audio"`` count as negatives:
    their ground truth is empty in every frame, whatever ``mask_files`` say.

    Args:
        threshold: the model's mask threshold (``MODEL.AQFORMER.MASK_THRESHOLD``) for FPR and area.
        distributed: gather all ranks' clips to rank 0 in :meth:`evaluate`.

    :meth:`evaluate` returns ``{"listening": {"foreground_frames" (share of frames with any predicted
    foreground: the FPR on negatives), "mean_area", "mIoU" (official, clips with their own ground truth; None
    when all clips are negatives), "num_clips", "num_frames"}}``; :attr:`clips` holds the per-clip records (sorted by video id):
    ``{"video_id", "negative", "any_fg" [T], "area" [T], "iou" [labelled frames] or None, "empty_gt" [T] or
    None}`` (``empty_gt``: the frame is labelled and its ground truth is empty; None for negatives).
    """

    def __init__(self, *, threshold: float, distributed: bool = True):
        self._threshold = float(threshold)
        self._distributed = distributed
        self.clips: List[dict] = []
        self._records: List[dict] = []

    def reset(self) -> None:
        self._records = []
        self.clips = []

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs):
            probs = out["sound_probs"].detach().to("cpu", torch.float32)  # [T, H, W]
            any_fg, area = foreground_per_frame(probs, self._threshold)
            negative = "negative_audio" in inp
            iou = empty_gt = None
            if not negative:
                labelled = [t for t, p in enumerate(inp["mask_files"]) if p is not None]
                gt = torch.stack([torch.from_numpy(read_avs_mask(inp["mask_files"][t])) for t in labelled])  # [V, H, W]
                iou = mask_iou_per_frame(binarize(probs[labelled]), gt).tolist()  # official 0.5 threshold
                empty_gt = [False] * len(any_fg)
                for t, empty in zip(labelled, (gt.flatten(1) == 0).all(1).tolist()):  # [V] nothing sounds
                    empty_gt[t] = empty
            self._records.append({"video_id": inp["video_id"], "negative": negative, "any_fg": any_fg.tolist(),
                                  "area": area.tolist(), "iou": iou, "empty_gt": empty_gt})

    def evaluate(self):
        records = self._records
        if self._distributed:
            comm.synchronize()
            records = list(itertools.chain.from_iterable(comm.gather(records, dst=0)))
            if not comm.is_main_process():
                return {}
        self.clips = sorted(records, key=lambda r: r["video_id"])
        if not self.clips:
            raise ValueError("ListeningEvaluator: no clip was evaluated")
        any_fg = [a for r in self.clips for a in r["any_fg"]]
        area = [a for r in self.clips for a in r["area"]]
        ious = [float(np.mean(r["iou"])) for r in self.clips if r["iou"]]
        return OrderedDict({"listening": {
            "foreground_frames": false_positive_rate(any_fg), "mean_area": mean_foreground_area(area),
            "mIoU": float(np.mean(ious)) if ious else None,
            "num_clips": len(self.clips), "num_frames": len(any_fg),
        }})
