"""AVSBench metric functions against hand-computed values and a literal threshold loop."""
import numpy as np
import pytest
import torch

from aqformer_d2.evaluation.metrics import (
    fscore_curve_from_counts,
    fscore_per_video,
    fscore_thresholds,
    mask_iou_per_frame,
    miou_per_video,
    threshold_counts,
)


def test_iou_official_cases():
    ones, zeros = torch.ones(4, 5, 5), torch.zeros(4, 5, 5)
    # the cases of the official utility.py self-check
    assert torch.allclose(mask_iou_per_frame(ones, ones), torch.full((4,), 25 / (25 + 1e-7), dtype=torch.float64))
    # empty GT, empty prediction: I = sum((1-p)(1-g)) = 25, U = 25 -> 1
    assert torch.allclose(mask_iou_per_frame(zeros, zeros), torch.full((4,), 25 / (25 + 1e-7), dtype=torch.float64))
    assert mask_iou_per_frame(zeros, ones).abs().max() == 0  # I = 0
    assert mask_iou_per_frame(ones, zeros).abs().max() == 0  # empty GT, full prediction: I = 0, U = 25
    half = ones.clone()
    half[:2] = 0
    # pred ones, target half empty: frames 0,1 empty GT -> 0; frames 2,3 -> 1
    np.testing.assert_allclose(mask_iou_per_frame(ones, half).numpy(), [0, 0, 1, 1], atol=1e-8)


def test_iou_hand_computed_with_probabilities():
    gt = np.array([[[1, 1], [0, 0]], [[0, 0], [0, 0]]])
    probs = np.array([[[0.9, 0.4], [0.6, 0.1]], [[0.2, 0.2], [0.2, 0.5]]])
    # frame 0: pred (> 0.5) [[1,0],[1,0]] -> I = 1, U = 3 -> 1/3
    # frame 1: empty GT; 0.5 is not > 0.5 -> empty prediction -> 4 / 4 = 1
    assert miou_per_video(probs, gt) == pytest.approx((1 / 3 + 1) / 2, abs=1e-6)


def _literal_counts(s, g, num=255):
    """The official _eval_pr loop, written out: positives where s >= thr (float32 comparison)."""
    thr = torch.linspace(0, 1 - 1e-10, num)
    tp, pos = [], []
    for k in range(num):
        y = (s >= thr[k]).float()
        tp.append(int((y * g).sum()))
        pos.append(int(y.sum()))
    return torch.tensor(tp), torch.tensor(pos)


def test_threshold_counts_equal_literal_loop():
    gen = torch.Generator().manual_seed(0)
    thr = fscore_thresholds()
    # random probabilities plus values exactly on thresholds (the >= boundary) and 0 / 1
    s = torch.cat([torch.rand(200, generator=gen), thr[::7], torch.tensor([0.0, 1.0])]).float()
    g = (torch.rand(s.numel(), generator=gen) > 0.6).float()
    tp, pos = threshold_counts(s.view(1, -1), g.view(1, -1))
    tp_ref, pos_ref = _literal_counts(s, g)
    assert torch.equal(tp, tp_ref) and torch.equal(pos, pos_ref)


def test_fscore_hand_computed():
    # one frame, 2x2: probs [[.9,.4],[.6,.1]], gt [[1,1],[0,0]] (2 GT pixels)
    #   thr <= .1 : pos 4, tp 2 -> P .5,  R 1  -> F = 1.3*.5/(.15+1)      = .565217
    #   .1<thr<=.4: pos 3, tp 2 -> P 2/3, R 1  -> F = 1.3*(2/3)/(.2+1)    = .722222
    #   .4<thr<=.6: pos 2, tp 1 -> P .5,  R .5 -> F = 1.3*.25/(.15+.5)    = .5
    #   .6<thr<=.9: pos 1, tp 1 -> P 1,   R .5 -> F = 1.3*.5/(.3+.5)      = .8125
    #   thr > .9  : pos 0      -> P = R = 0, F = NaN -> 0
    probs = torch.tensor([[[0.9, 0.4], [0.6, 0.1]]])
    gt = torch.tensor([[[1, 1], [0, 0]]])
    assert fscore_per_video(probs, gt) == pytest.approx(0.8125, abs=1e-6)
    tp, pos = threshold_counts(probs[0], gt[0])
    f = fscore_curve_from_counts(tp, pos, 2)
    # thresholds k/254: k <= 25 is <= .1 (25.4), k <= 101 is <= .4, k <= 152 <= .6, k <= 228 <= .9
    assert f[0] == pytest.approx(0.65 / 1.15) and f[25] == pytest.approx(0.65 / 1.15)
    assert f[26] == pytest.approx(1.3 * 2 / 3 / 1.2) and f[101] == pytest.approx(1.3 * 2 / 3 / 1.2)
    assert f[102] == pytest.approx(0.5) and f[153] == pytest.approx(0.8125) and f[228] == pytest.approx(0.8125)
    assert f[229] == 0 and f[254] == 0


def test_fscore_empty_gt_frames_are_skipped_and_all_empty_video_scores_zero():
    probs = torch.tensor([[[0.9, 0.4], [0.6, 0.1]], [[0.9, 0.9], [0.9, 0.9]]])
    gt = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 0]]])
    # the empty-GT frame 1 does not enter the mean curve: same as frame 0 alone
    assert fscore_per_video(probs, gt) == pytest.approx(0.8125, abs=1e-6)
    assert fscore_per_video(probs, torch.zeros_like(gt)) == 0.0
