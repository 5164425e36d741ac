"""summarise_listening on hand-made per-clip records: the own_empty_gt row (frames whose ground truth is empty
under the clip's own audio) is the ratio over exactly those frames, resampled by clip, and absent when no
frame has an empty ground truth."""
import numpy as np
import pytest

from aqformer_d2.engine import summarise_listening


def _results(own_clips, silence_fg):
    own = {"condition": {"name": "own", "negative": False}, "clips": own_clips,
           "listening": {"foreground_frames": float(np.mean([f for c in own_clips for f in c["any_fg"]])),
                         "mean_area": float(np.mean([a for c in own_clips for a in c["area"]]))},
           "avs": {"mIoU": 0.5, "Fscore": 0.6}}
    silence_clips = [{"video_id": c["video_id"], "negative": True, "any_fg": [silence_fg] * len(c["any_fg"]),
                      "area": [0.0] * len(c["any_fg"]), "iou": None, "empty_gt": None} for c in own_clips]
    silence = {"condition": {"name": "silence", "negative": True}, "clips": silence_clips,
               "listening": {"foreground_frames": float(silence_fg), "mean_area": 0.0}, "avs": None}
    return {"own": own, "silence": silence}


def _clip(vid, any_fg, area, empty_gt):
    return {"video_id": vid, "negative": False, "any_fg": any_fg, "area": area, "iou": [0.5] * len(any_fg),
            "empty_gt": empty_gt}


def test_own_empty_gt_row_counts_only_the_frames_where_nothing_sounds():
    clips = [_clip("a", [True, True, False], [0.1, 0.2, 0.0], [False, True, True]),   # 2 empty, 1 with fg
             _clip("b", [True, True], [0.3, 0.4], [False, False]),                    # none empty: left out
             _clip("c", [True, True, True], [0.05, 0.01, 0.02], [True, False, False])]  # 1 empty, with fg
    summary = summarise_listening(_results(clips, True), num_resamples=200)
    assert list(summary) == ["own", "own_empty_gt", "silence"]
    row = summary["own_empty_gt"]
    assert row["negative"] and row["derived_from"] == "own" and "listening_score" not in row
    assert (row["num_clips"], row["num_frames"]) == (2, 3)
    assert row["foreground_frames"] == pytest.approx(2 / 3)  # frames a2 (fg), a3 (none), c1 (fg)
    assert row["mean_area"] == pytest.approx((0.2 + 0.0 + 0.05) / 3)
    lo, hi = row["foreground_frames_ci"]
    # resamples of clips {a, c}: a alone 1/2, c alone 1/1, mixtures in between; never below a's 1/2
    assert 0.5 <= lo <= row["foreground_frames"] <= hi <= 1.0 and lo < hi
    assert summary["own"]["foreground_frames"] == pytest.approx(7 / 8)  # the own row itself is unchanged


def test_no_own_empty_gt_row_without_empty_frames():
    clips = [_clip("a", [True, False], [0.1, 0.0], [False, False])]
    assert list(summarise_listening(_results(clips, False), num_resamples=20)) == ["own", "silence"]
