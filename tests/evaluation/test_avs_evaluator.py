"""AVSEvaluator: hand-computed M_J / M_F, unlabelled frames, gather/merge, PNG + JSON output."""
import json
import os
import uuid

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog

from aqformer_d2.data.datasets import read_avs_mask, register_avs_layout
from aqformer_d2.evaluation import PER_VIDEO_JSON, PNG_DIR, AVSEvaluator

# Three videos of 2x2 frames. Thresholds of M_F are k/254 (k = 0..254); no probability below sits on one.
VIDEOS = {
    # frame 0: gt [[1,1],[0,0]], probs [[.9,.4],[.6,.1]] -> pred [[1,0],[1,0]]: I 1, U 3 -> IoU 1/3
    # frame 1: empty gt, probs .2 -> empty pred -> IoU 4/4 = 1 (skipped by M_F)
    # frame 2: no mask (None) -> not evaluated
    "A": (
        [[[1, 1], [0, 0]], [[0, 0], [0, 0]], None],
        [[[0.9, 0.4], [0.6, 0.1]], [[0.2, 0.2], [0.2, 0.2]], [[0.99, 0.99], [0.99, 0.99]]],
    ),
    # frame 0: gt [[1,0],[0,0]], probs [[.7,.3],[.2,.2]] -> pred = gt: IoU 1
    # frame 1: gt [[0,0],[1,1]], probs [[.8,.1],[.3,.6]] -> pred [[1,0],[0,1]]: I 1, U 3 -> 1/3
    "B": (
        [[[1, 0], [0, 0]], [[0, 0], [1, 1]]],
        [[[0.7, 0.3], [0.2, 0.2]], [[0.8, 0.1], [0.3, 0.6]]],
    ),
    # every frame empty: frame 0 full prediction -> IoU 0; frame 1 empty prediction -> IoU 1
    "C": (
        [[[0, 0], [0, 0]], [[0, 0], [0, 0]]],
        [[[0.7, 0.7], [0.7, 0.7]], [[0.1, 0.1], [0.1, 0.1]]],
    ),
}

# M_J per video: A (1/3 + 1)/2 = 2/3; B (1 + 1/3)/2 = 2/3; C (0 + 1)/2 = 1/2
#   mIoU = (2/3 + 2/3 + 1/2) / 3 = 0.611111
# M_F per video (F = 1.3 P R / (0.3 P + R)):
#   A: only frame 0 is valid: curve .565217 (thr<=.1) .722222 (<=.4) .5 (<=.6) .8125 (<=.9) 0 -> max .8125
#   B frame 0: .302326 (thr<=.2: P 1/4, R 1) .565217 (<=.3: P 1/2) 1 (<=.7) 0
#   B frame 1: .565217 (<=.1) .722222 (<=.3) .5 (<=.6: P .5 R .5) 0 (<=.8: TP 0) 0
#   B mean curve: k 0..25 .433771, 26..50 .512274, 51..76 .643720, 77..152 (1 + .5)/2 = .75, 153..177 .5 -> .75
#   C: no valid frame -> 0
#   Fscore = (.8125 + .75 + 0) / 3 = 0.520833
EXPECTED = {"mIoU": (2 / 3 + 2 / 3 + 1 / 2) / 3, "Fscore": (0.8125 + 0.75 + 0.0) / 3}
# Dataset-level figures:
#   mIoU_frames = (1/3 + 1 + 1 + 1/3 + 0 + 1) / 6 = 0.611111
#   mIoU_pooled = sum I / sum U (plain foreground) = (1 + 0 + 1 + 1 + 0 + 0) / (3 + 0 + 1 + 3 + 4 + 0) = 3/11
#   Fscore_frames: mean curve of the valid frames A0, B0, B1; best at .4 < thr <= .6 (k 77..101):
#       (.722222 + 1 + .5) / 3 = 0.740741
#   Fscore_pooled: summed over all 6 evaluated frames (5 GT pixels); best at .8 < thr <= .9:
#       TP 1 (the .9), pos 1 -> P 1, R .2 -> 1.3*.2/(.3+.2) = 0.52
EXPECTED_DATASET = {
    "mIoU_frames": (1 / 3 + 1 + 1 + 1 / 3 + 0 + 1) / 6,
    "mIoU_pooled": 3 / 11,
    "Fscore_frames": (1.3 * 2 / 3 / 1.2 + 1 + 0.5) / 3,
    "Fscore_pooled": 0.52,
    "num_videos": 3,
    "num_frames": 6,
    "num_unlabelled_frames": 1,
}


def make_inputs(tmp_path, videos=VIDEOS):
    inputs, outputs = [], []
    for vid, (gts, probs) in videos.items():
        mask_files, frame_files = [], []
        for t, g in enumerate(gts):
            frame_files.append(str(tmp_path / "frames" / vid / f"{vid}_{t + 1}.png"))
            if g is None:
                mask_files.append(None)
                continue
            path = tmp_path / "gt" / vid / f"{vid}_{t + 1}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.array(g, np.uint8) * 255, mode="L").save(path)
            mask_files.append(str(path))
        p = torch.tensor(probs, dtype=torch.float32)  # [T, H, W]
        inputs.append(
            {"video_id": vid, "frame_files": frame_files, "mask_files": mask_files, "height": p.shape[1], "width": p.shape[2]}
        )
        outputs.append({"sound_probs": p})
    return inputs, outputs


def run(evaluator, inputs, outputs):
    evaluator.reset()
    for i, o in zip(inputs, outputs):
        evaluator.process([i], [o])
    return evaluator.evaluate()["avs"]


def test_hand_computed_metrics(tmp_path):
    inputs, outputs = make_inputs(tmp_path)
    # distributed=True goes through comm.gather (a single process here)
    res = run(AVSEvaluator("avs_eval_test", distributed=True), inputs, outputs)
    for k, v in {**EXPECTED, **EXPECTED_DATASET}.items():
        assert res[k] == pytest.approx(v, abs=1e-6), k


def test_all_empty_video_contributes_zero_fscore(tmp_path):
    inputs, outputs = make_inputs(tmp_path, {"C": VIDEOS["C"]})
    res = run(AVSEvaluator("avs_eval_test", distributed=False), inputs, outputs)
    assert res["Fscore"] == 0.0 and res["mIoU"] == pytest.approx(0.5, abs=1e-6)


def test_correct_empty_prediction_scores_one(tmp_path):
    video = {"E": ([[[0, 0], [0, 0]]], [[[0.3, 0.1], [0.0, 0.5]]])}
    inputs, outputs = make_inputs(tmp_path, video)
    res = run(AVSEvaluator("avs_eval_test", distributed=False), inputs, outputs)
    assert res["mIoU"] == pytest.approx(1.0, abs=1e-6)


def test_two_halves_merged_equal_whole(tmp_path):
    rng = np.random.RandomState(0)
    videos = {}
    for v in range(7):
        gts = [(rng.rand(6, 5) > 0.7).astype(int).tolist() for _ in range(5)]
        if v == 3:
            gts = [[[0] * 5] * 6] * 5  # an all-empty video
        if v == 4:
            gts[2] = None
        videos[f"v{v}"] = (gts, rng.rand(5, 6, 5).tolist())
    inputs, outputs = make_inputs(tmp_path, videos)
    whole = run(AVSEvaluator("avs_eval_test", distributed=False), inputs, outputs)

    first, second = AVSEvaluator("avs_eval_test", distributed=False), AVSEvaluator("avs_eval_test", distributed=False)
    first.reset()
    second.reset()
    # interleaved halves, as an InferenceSampler-like split across two ranks
    first.process(inputs[::2], outputs[::2])
    second.process(inputs[1::2], outputs[1::2])
    merged = AVSEvaluator("avs_eval_test", distributed=False)
    merged.merge_states([second.state(), first.state()])  # rank order must not matter
    assert merged.evaluate()["avs"] == whole

    # a video counted twice (e.g. a padded sampler) is an error, not a silent bias
    merged.merge_states([first.state(), first.state()])
    with pytest.raises(ValueError, match="more than once"):
        merged.evaluate()


def test_shape_mismatch_is_reported(tmp_path):
    inputs, outputs = make_inputs(tmp_path, {"B": VIDEOS["B"]})
    outputs[0]["sound_probs"] = outputs[0]["sound_probs"][:, :1]
    ev = AVSEvaluator("avs_eval_test", distributed=False)
    with pytest.raises(ValueError, match="'B'.*sound_probs"):
        ev.process(inputs, outputs)
    inputs, outputs = make_inputs(tmp_path, {"B": VIDEOS["B"]})
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(inputs[0]["mask_files"][1])
    with pytest.raises(ValueError, match="B_2.png"):
        ev.process(inputs, outputs)


def test_png_export_and_per_video_json(tmp_path):
    from tests.data.test_register_avsbench import write_avs_tree

    root = str(tmp_path / "avs")
    write_avs_tree(root, hw=(6, 8))
    prefix = "t" + uuid.uuid4().hex[:10]
    register_avs_layout(prefix, root, "s4")
    register_avs_layout(prefix, root, "ms3")
    out_dir = str(tmp_path / "out")
    for task, split, rel in (("s4", "test", os.path.join("test", "cat", "s4vidB")), ("ms3", "val", os.path.join("val", "ms3vidB"))):
        dicts = DatasetCatalog.get(f"{prefix}_{task}_{split}")
        ev = AVSEvaluator(f"{prefix}_{task}_{split}", output_dir=out_dir, distributed=False, save_png=True, mask_threshold=0.5)
        ev.reset()
        probs = torch.rand(5, 6, 8, generator=torch.Generator().manual_seed(1))  # [T, H, W]
        ev.process(dicts, [{"sound_probs": probs}])
        res = ev.evaluate()["avs"]
        name = dicts[0]["video_id"]
        for t in range(5):
            png = os.path.join(out_dir, PNG_DIR, rel, f"{name}_{t + 1}.png")
            np.testing.assert_array_equal(read_avs_mask(png), (probs[t] > 0.5).numpy().astype(np.uint8))
        with open(os.path.join(out_dir, PER_VIDEO_JSON)) as f:
            data = json.load(f)
        assert data["summary"]["mIoU"] == pytest.approx(res["mIoU"])
        assert [v["video_id"] for v in data["videos"]] == [name]
        assert data["videos"][0]["J"] == pytest.approx(res["mIoU"]) and len(data["videos"][0]["frame_iou"]) == 5
