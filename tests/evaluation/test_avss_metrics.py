"""The official AVSS metric (avss_metrics.py) against a loop implementation written from the definition and
against hand-computed figures.

Round-off bound: both sides compute each per-frame value with the same IEEE float64 operations; they differ
only in the order of the per-class sums over n frames (numpy's pairwise sum vs a running sum). For n
non-negative terms each order is within (n - 1) u of the exact sum (u = 2^-53), so two orders differ by at
most 2 (n - 1) u * sum <= 2 * 40 * 1.1e-16 * 40 < 1e-12 for n <= 40 frames and per-frame values <= 1; the
class means divide that by the count, the overall means by K. Tolerance: 1e-12 absolute.
"""
import numpy as np
import pytest
import torch

from aqformer_d2.evaluation import (
    AVSS_IOU_EPS,
    argmax_labels,
    avss_scores,
    class_areas,
    class_sums,
    frame_iou_fscore,
)

from .avss_reference import reference_avss

TOL = 1e-12


def _ours(preds, gts, k):
    sums = class_sums(*class_areas(np.stack(preds), np.stack(gts), k))
    return avss_scores(sums["iou_sum"], sums["f_sum"], sums["count"]), sums


def test_hand_computed_example():
    """K = 4, two 2x3 frames.
    frame 0: gt [[0,0,1],[0,2,2]], pred [[0,1,1],[0,2,0]]
      class 0: I 2, P 3, G 3, U 4 -> IoU .5, p = r = 2/3 -> F 2/3
      class 1: I 1, P 2, G 1, U 2 -> IoU .5, p .5 r 1 -> F 1.3*.5/(.15+1) = .565217
      class 2: I 1, P 1, G 2, U 2 -> IoU .5, p 1 r .5 -> F 1.3*.5/(.3+.5) = .8125
      class 3: absent (U 0) -> IoU 0, not counted
    frame 1 (empty: background only): gt all 0, pred all 0 except one pixel 3
      class 0: I 5, P 5, G 6, U 6 -> IoU 5/6, p 1, r 5/6 -> F 1.3*(5/6)/(.3+5/6) = .955882
      class 3: I 0, P 1, G 0, U 1 -> IoU 0, F 0 (nan), counted
    per class IoU: 0: (.5 + 5/6)/2 = 2/3; 1: .5; 2: .5; 3: 0/1 = 0 -> mIoU = (2/3 + 1) / 4 = 5/12
    per class F: 0: (2/3 + .955882)/2 = .811275; 1: .565217; 2: .8125; 3: 0 -> mean .547248
    """
    gts = [np.array([[0, 0, 1], [0, 2, 2]]), np.zeros((2, 3), int)]
    preds = [np.array([[0, 1, 1], [0, 2, 0]]), np.array([[0, 0, 0], [0, 0, 3]])]
    s, sums = _ours(preds, gts, 4)
    assert sums["count"].tolist() == [2, 1, 1, 1] and sums["gt_frames"].tolist() == [2, 1, 1, 0]
    assert abs(s["mIoU"] - 5 / 12) < TOL
    f0 = (2 / 3 + 1.3 * (5 / 6) / (0.3 + 5 / 6)) / 2
    f_expected = [f0, 1.3 * 0.5 / (0.15 + 1), 1.3 * 0.5 / 0.8, 0.0]
    np.testing.assert_allclose(s["F"], f_expected, rtol=0, atol=TOL)
    assert abs(s["Fscore"] - sum(f_expected) / 4) < TOL
    assert abs(s["mIoU_noBg"] - 1 / 3) < TOL  # classes 1..3: (.5 + .5 + 0) / 3
    assert abs(s["mIoU_script_noBg"] - (2 / 3 + 1) / 3) < TOL  # classes 0..2, what test.py prints as noBg


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_frames_match_the_reference(seed):
    """Random 5x6 frames with K = 6; class 5 never appears (absent everywhere -> 0 in the mean), some frames
    are empty (background only in the ground truth) and some predictions are all background (padded frames)."""
    rng = np.random.default_rng(seed)
    k, n = 6, 30
    gts, preds = [], []
    for i in range(n):
        if i % 5 == 0:
            gt = np.zeros((5, 6), dtype=np.int64)  # empty frame
        else:
            gt = rng.integers(0, 5, size=(5, 6))
        pred = np.where(rng.random((5, 6)) < 0.6, gt, rng.integers(0, 5, size=(5, 6)))
        if i % 7 == 0:
            pred = np.zeros_like(gt)  # e.g. a padded frame predicted as background
        gts.append(gt)
        preds.append(pred)
    s, sums = _ours(preds, gts, k)
    ref = reference_avss(preds, gts, k)
    assert abs(s["mIoU"] - ref[0]) < TOL and abs(s["Fscore"] - ref[1]) < TOL
    np.testing.assert_allclose(s["IoU"], ref[2], rtol=0, atol=TOL)
    np.testing.assert_allclose(s["F"], ref[3], rtol=0, atol=TOL)
    assert sums["count"].tolist() == ref[4] and sums["gt_frames"].tolist() == ref[5]
    assert s["IoU"][5] == 0 and sums["count"][5] == 0
    # teeth: averaging over the classes that occur instead of all K gives another number
    assert abs(s["IoU"][:5].mean() - s["mIoU"]) > 0.05


def test_argmax_and_first_maximum_on_ties():
    scores = torch.zeros(1, 3, 1, 2)
    scores[0, 2, 0, 1] = 1.0  # pixel 0: tie between all classes -> 0; pixel 1 -> class 2
    assert argmax_labels(scores).tolist() == [[[0, 2]]]


def test_frame_values_and_epsilon():
    iou, f, counted = frame_iou_fscore(np.array([[0, 3, 0]]), np.array([[0, 4, 2]]), np.array([[0, 3, 0]]))
    assert iou[0, 0] == 0 and counted.tolist() == [[False, True, True]]
    assert iou[0, 1] == 3 / (4 + AVSS_IOU_EPS) and iou[0, 2] == 0 and f[0, 2] == 0
    assert abs(f[0, 1] - 1.3 * 0.75 / (0.3 * 0.75 + 1)) < TOL


def test_bad_inputs():
    with pytest.raises(ValueError, match="outside 0..3"):
        class_areas(np.full((1, 2, 2), 4), np.zeros((1, 2, 2), int), 4)
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        class_areas(np.zeros((2, 2), int), np.zeros((2, 2), int), 4)
    with pytest.raises(ValueError, match=r"\[N, K, H, W\]"):
        argmax_labels(np.zeros((2, 2, 2)))
