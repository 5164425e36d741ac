"""Negative-audio metrics: frame-level FPR, foreground area, the listening score (not gameable by always or never
predicting), bootstrap ranges, and the ListeningEvaluator on hand-made predictions."""
import numpy as np
import pytest
import torch
from PIL import Image

from aqformer_d2.evaluation.listening import (
    ListeningEvaluator, bootstrap_interval, drop_small_masks, empty_ground_truth_rates, false_positive_rate,
    foreground_frames_above, foreground_per_frame, listening_score, mean_foreground_area,
)


def test_foreground_per_frame_uses_the_threshold_strictly():
    probs = torch.zeros(3, 2, 2)
    probs[1, 0, 0] = 0.9  # one pixel: the frame counts as a false positive
    probs[2] = 0.6
    probs[2, 1, 1] = 0.5  # not > 0.5
    any_fg, area = foreground_per_frame(probs, 0.5)
    assert any_fg.tolist() == [False, True, True]
    assert area.tolist() == [0.0, 0.25, 0.75]
    assert foreground_per_frame(probs, 0.7)[0].tolist() == [False, True, False]
    assert false_positive_rate(any_fg) == pytest.approx(2 / 3) and mean_foreground_area(area) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="no frames"):
        false_positive_rate([])


def test_foreground_frames_above_counts_frames_over_a_minimum_area_strictly():
    area = [0.0, 0.001, 0.005, 0.03]
    assert foreground_frames_above(area, 0.0) == 0.75  # = FPR: any pixel
    assert foreground_frames_above(area, 0.001) == 0.5  # strictly above
    assert foreground_frames_above(area, 0.004) == 0.5
    assert foreground_frames_above(area, 0.01) == 0.25
    assert foreground_frames_above(area, 0.0) == false_positive_rate([a > 0 for a in area])
    with pytest.raises(ValueError, match="no frames"):
        foreground_frames_above([], 0.0)
    with pytest.raises(ValueError, match="min_area"):
        foreground_frames_above(area, 1.0)


def test_drop_small_masks_keeps_exactly_the_frames_foreground_frames_above_counts():
    rng = np.random.default_rng(0)
    # 40 frames of 7 x 9 pixels with 0..63 foreground pixels each; class labels 1..3 (AVSS-like)
    counts = rng.integers(0, 64, size=40)
    labels = np.zeros((40, 63), np.uint8)
    for t, c in enumerate(counts):
        labels[t, rng.permutation(63)[:c]] = rng.integers(1, 4, size=c)
    labels = labels.reshape(40, 7, 9)
    area = foreground_per_frame(torch.from_numpy(labels > 0).float(), 0.5)[1]  # [40]
    for a in (0.0, 5 / 63, 0.2, 31 / 63, 0.9):  # 5/63 and 31/63: a frame with exactly that share is emptied
        kept = drop_small_masks(labels, a)
        assert kept.dtype == np.uint8 and kept.shape == labels.shape
        frames = kept.reshape(40, -1).any(1)  # [40]
        assert frames.tolist() == (area > a).tolist()
        assert float(frames.mean()) == foreground_frames_above(area, a)
        assert np.array_equal(kept[frames], labels[frames]) and not kept[~frames].any()
        ruled_t = drop_small_masks(torch.from_numpy(labels > 0), a)  # torch bool: the same frames
        assert isinstance(ruled_t, torch.Tensor) and ruled_t.flatten(1).any(1).tolist() == frames.tolist()
    assert any(counts == 5) or any(counts == 31)  # the boundary case is exercised
    assert drop_small_masks(labels, 0.0) is not labels  # a copy
    with pytest.raises(ValueError, match="min_area"):
        drop_small_masks(labels, 1.0)
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        drop_small_masks(labels[0], 0.1)


def test_min_area_rule_empties_small_frames_for_every_evaluator():
    from aqformer_d2.engine import MinAreaRule

    probs = torch.zeros(3, 4, 4)
    probs[0, 0, :2] = 0.9  # 2 of 16 pixels: share 0.125
    probs[1, :2] = 0.8  # 8 of 16: 0.5
    probs[2] = 0.4  # below the threshold: already empty

    class Fixed(torch.nn.Module):
        def forward(self, inputs):
            return [{"sound_probs": probs.clone()} for _ in inputs]

    out = MinAreaRule(Fixed(), threshold=0.5, min_area=0.125)([{"video_id": "v"}])[0]["sound_probs"]
    assert not out[0].any() and torch.equal(out[1:], probs[1:])  # frame 0 emptied at any threshold, the rest as is
    assert torch.equal(MinAreaRule(Fixed(), threshold=0.5, min_area=0.1)([{}])[0]["sound_probs"], probs)

    class Semantic(torch.nn.Module):
        def forward(self, inputs):
            return [{"sem_seg": probs} for _ in inputs]

    with pytest.raises(ValueError, match="v: the minimum-area rule needs 'sound_probs'"):
        MinAreaRule(Semantic(), threshold=0.5, min_area=0.1)([{"video_id": "v"}])
    with pytest.raises(ValueError, match="min_area"):
        MinAreaRule(Fixed(), threshold=0.5, min_area=-0.1)


def test_listening_score_cannot_be_gamed():
    # always predicting foreground: FPR 1 -> 0 whatever M_J
    assert listening_score(0.9, 1.0) == 0.0
    # never predicting: M_J 0 on frames with a sounding object -> 0 although FPR is 0
    assert listening_score(0.0, 0.0) == 0.0
    # harmonic mean: 2 * 0.8 * 0.6 / 1.4
    assert listening_score(0.8, 0.4) == pytest.approx(0.96 / 1.4, rel=1e-15)
    assert listening_score(1.0, 0.0) == 1.0 and listening_score(0.0, 1.0) == 0.0
    # a harmonic mean: below the arithmetic mean when the two differ, so a model must do both
    assert listening_score(0.9, 0.5) < (0.9 + 0.5) / 2
    with pytest.raises(ValueError, match="fpr"):
        listening_score(0.5, 1.5)


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_more_clips():
    rng = np.random.default_rng(0)
    small = rng.random(20)
    large = rng.random(2000)
    lo_s, hi_s = bootstrap_interval(lambda idx: small[idx].mean(), len(small), num_resamples=400, seed=1)
    lo_l, hi_l = bootstrap_interval(lambda idx: large[idx].mean(), len(large), num_resamples=400, seed=1)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    # the 95 % range of a mean of n uniforms is ~ 4 * 0.289 / sqrt(n): 0.26 for 20 clips, 0.026 for 2000
    assert 0.15 < hi_s - lo_s < 0.4 and 0.015 < hi_l - lo_l < 0.04
    assert bootstrap_interval(lambda idx: small[idx].mean(), 20, num_resamples=400, seed=1) == (lo_s, hi_s)
    constant = np.full(10, 0.3)
    lo, hi = bootstrap_interval(lambda idx: constant[idx].mean(), 10, num_resamples=50)
    assert lo == pytest.approx(0.3, abs=1e-15) and hi == pytest.approx(0.3, abs=1e-15)
    with pytest.raises(ValueError):
        bootstrap_interval(lambda idx: 0.0, 0)


def _mask(path, array):
    Image.fromarray((array * 255).astype(np.uint8), mode="L").save(path)
    return str(path)


def test_evaluator_records_negatives_and_positives(tmp_path):
    gt = np.zeros((2, 2), dtype=np.uint8)
    gt[0, 0] = 1
    mask_files = [_mask(tmp_path / "m0.png", gt), None]  # frame 2 unlabelled
    probs = torch.zeros(2, 2, 2)
    probs[0, 0, 0] = 0.8  # exactly the ground truth: IoU 1
    probs[1, 1, 1] = 0.6
    positive = {"video_id": "b", "mask_files": mask_files}
    negative = {"video_id": "a", "mask_files": mask_files, "negative_audio": {"kind": "silence", "level_db": None, "seed": 0}}
    ev = ListeningEvaluator(threshold=0.5, distributed=False)
    ev.reset()
    ev.process([positive, negative], [{"sound_probs": probs}, {"sound_probs": probs * 0.5}])
    res = ev.evaluate()["listening"]
    # negative clip: probs*0.5 -> 0.4 and 0.3, nothing above 0.5; positive clip: both frames have foreground
    assert res["foreground_frames"] == pytest.approx(2 / 4) and res["num_frames"] == 4 and res["num_clips"] == 2
    assert res["mean_area"] == pytest.approx((0.25 + 0.25) / 4)
    assert res["mIoU"] == pytest.approx(1.0, abs=1e-6)  # only the positive's labelled frame, IoU 1/(1+1e-7)
    a, b = ev.clips
    assert a["video_id"] == "a" and a["negative"] and a["iou"] is None and a["any_fg"] == [False, False]
    assert b["iou"] == [pytest.approx(1.0, abs=1e-6)] and b["any_fg"] == [True, True]
    assert a["empty_gt"] is None and b["empty_gt"] == [False, False]  # frame 2 unlabelled: not counted as empty


def test_evaluator_marks_labelled_frames_whose_ground_truth_is_empty(tmp_path):
    """A clip heard with its own audio whose second frame has nobody sounding (empty mask, as SynthAVS-MS3's
    silent seconds): that frame is marked, and empty_ground_truth_rates counts it and whether it has foreground."""
    obj, nothing = np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8)
    obj[1, 1] = 1
    clip = {"video_id": "m", "mask_files": [_mask(tmp_path / "o.png", obj), _mask(tmp_path / "n.png", nothing),
                                            _mask(tmp_path / "n2.png", nothing)]}
    probs = torch.zeros(3, 2, 2)
    probs[0, 1, 1] = 0.9
    probs[1, 0, :] = 0.7  # a false positive of half the frame where nothing sounds; frame 3 stays empty
    ev = ListeningEvaluator(threshold=0.5, distributed=False)
    ev.reset()
    ev.process([clip], [{"sound_probs": probs}])
    ev.evaluate()
    rec = ev.clips[0]
    assert rec["empty_gt"] == [False, True, True] and rec["any_fg"] == [True, True, False]
    frames, fg, area = empty_ground_truth_rates(ev.clips)
    assert frames.tolist() == [2] and fg.tolist() == [1] and area.tolist() == [pytest.approx(0.5)]


def test_empty_ground_truth_rates_refuses_negative_or_misaligned_records():
    good = {"video_id": "g", "any_fg": [True, False], "area": [0.1, 0.0], "empty_gt": [True, True]}
    assert [x.tolist() for x in empty_ground_truth_rates([good])] == [[2], [1], [pytest.approx(0.1)]]
    with pytest.raises(ValueError, match="n: empty_gt must list every frame"):
        empty_ground_truth_rates([good, {"video_id": "n", "any_fg": [False], "area": [0.0], "empty_gt": None}])
    with pytest.raises(ValueError, match="s: empty_gt must list every frame of a positive clip \\(2\\), got 1"):
        empty_ground_truth_rates([{"video_id": "s", "any_fg": [True, False], "area": [0.1, 0.0], "empty_gt": [True]}])


def test_evaluator_behind_the_min_area_rule_scores_an_emptied_frame_as_missed(tmp_path):
    """The IoU side of the rule: a correct but small mask (1 of 4 pixels) is emptied at min_area 0.25, so its
    official IoU drops from 1 to 0, while a frame above the minimum keeps its IoU."""
    from aqformer_d2.engine import MinAreaRule

    small, large = np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8)
    small[0, 0] = 1
    large[0] = 1
    clip = {"video_id": "c", "mask_files": [_mask(tmp_path / "s.png", small), _mask(tmp_path / "l.png", large)]}
    probs = torch.from_numpy(np.stack([small, large])).float() * 0.9  # [2, 2, 2], exactly the ground truth

    class Fixed(torch.nn.Module):
        def forward(self, inputs):
            return [{"sound_probs": probs.clone()} for _ in inputs]

    for min_area, expected in ((0.0, [1.0, 1.0]), (0.25, [0.0, 1.0]), (0.5, [0.0, 0.0])):
        ev = ListeningEvaluator(threshold=0.5, distributed=False)
        ev.reset()
        ev.process([clip], MinAreaRule(Fixed(), threshold=0.5, min_area=min_area)([clip]))
        res = ev.evaluate()["listening"]
        assert ev.clips[0]["iou"] == [pytest.approx(e, abs=1e-6) for e in expected]
        assert ev.clips[0]["any_fg"] == [e > 0 for e in expected]
        assert res["mIoU"] == pytest.approx(float(np.mean(expected)), abs=1e-6)
