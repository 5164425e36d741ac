"""AVSSEvaluator: both protocols against the loop reference, unlabelled frames, output, errors, and 2 gloo
processes against 1 process."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from aqformer_d2.data.datasets import avss_palette
from aqformer_d2.evaluation import AVSS_METRICS_JSON, AVSSEvaluator

from .avss_reference import reference_avss

K = 5
NAMES = ["background", "a", "b", "c", "d"]
H, W = 4, 6
# Same bound as test_avss_metrics.py (sums of <= 40 per-frame values <= 1 in two orders).
TOL = 1e-12


def _clips(root):
    """Four clips padded to 10 frames: (inp, scores [10, K, H, W], class maps {t: gt}).
    v1s-like clip "s0" is a training clip: only frame 0 labelled. Class 4 never occurs in any label."""
    rng = np.random.default_rng(0)
    palette = avss_palette(K)
    clips = []
    for uid, subset, n_real, n_lab in [("s0", "v1s", 5, 1), ("s1", "v1s", 5, 5), ("m0", "v1m", 5, 5), ("v0", "v2", 10, 10)]:
        labels, gts = [], {}
        for t in range(10):
            if t < n_lab:
                gt = rng.integers(0, 4, size=(H, W))
                if t == 1:
                    gt[:] = 0  # an empty (background-only) frame
                path = os.path.join(root, f"{uid}_{t}.png")
                Image.fromarray(palette[gt]).save(path)
                labels.append(path)
                gts[t] = gt
            else:
                labels.append(None)
        scores = torch.from_numpy(rng.random((10, K, H, W))).float()  # padded frames predict random classes
        inp = {"video_id": uid, "subset": subset, "label_files": labels, "height": H, "width": W,
               "frame_valid": torch.tensor([t < n_real for t in range(10)])}
        clips.append((inp, scores, gts))
    return clips


def _expected(clips, protocol):
    preds, gts = [], []
    for inp, scores, labels in clips:
        for t in range(10):
            real = bool(inp["frame_valid"][t])
            if real and t in labels:
                gts.append(labels[t])
            elif not real and protocol == "official":
                gts.append(np.zeros((H, W), dtype=np.int64))
            else:
                continue
            preds.append(scores[t].argmax(0).numpy())
    return reference_avss(preds, gts, K), len(preds)


def _evaluate(clips, protocol, **kw):
    ev = AVSSEvaluator("avss_unit_test", protocol=protocol, distributed=False, num_classes=K, class_names=NAMES, **kw)
    for inp, scores, _ in clips:
        ev.process([inp], [{"sem_seg": scores}])
    return ev.evaluate()


@pytest.mark.parametrize("protocol", ["official", "real_frames"])
def test_protocols_match_the_reference(tmp_path, protocol):
    clips = _clips(str(tmp_path))
    res = _evaluate(clips, protocol, output_dir=str(tmp_path / "out"))
    assert list(res) == [f"avss_{protocol}"]
    r = res[f"avss_{protocol}"]
    (miou, fscore, iou_c, f_c, counted, gt_frames), n = _expected(clips, protocol)
    assert r["num_frames"] == n == (1 + 5 + 5 + 10) + (15 if protocol == "official" else 0)
    assert r["num_padded_frames"] == (15 if protocol == "official" else 0) and r["num_clips"] == 4
    assert abs(r["mIoU"] - miou) < TOL and abs(r["Fscore"] - fscore) < TOL
    for j, name in enumerate(NAMES):
        assert abs(r[f"IoU-{name}"] - iou_c[j]) < TOL and abs(r[f"F-{name}"] - f_c[j]) < TOL
        assert r[f"frames-{name}"] == gt_frames[j]
    assert r["IoU-d"] == 0 and r["frames-d"] == 0  # never in a label; predicted on some frames -> counted, IoU 0
    assert abs(r["mIoU_noBg"] - np.mean(iou_c[1:])) < TOL
    saved = json.load(open(tmp_path / "out" / AVSS_METRICS_JSON))
    assert saved["protocol"] == protocol and saved["results"]["mIoU"] == r["mIoU"]


def test_protocols_differ_by_the_padded_frames(tmp_path):
    clips = _clips(str(tmp_path))
    official = _evaluate(clips, "official")["avss_official"]
    real = _evaluate(clips, "real_frames")["avss_real_frames"]
    assert official["num_frames"] - real["num_frames"] == 15
    assert abs(official["mIoU"] - real["mIoU"]) > 1e-3
    # background predicted perfectly on the padded frames raises the official background IoU
    for inp, scores, _ in clips:
        scores[~inp["frame_valid"]] = torch.nn.functional.one_hot(torch.zeros(H, W, dtype=torch.long), K).permute(2, 0, 1).float()
    better = _evaluate(clips, "official")["avss_official"]
    assert better["IoU-background"] > official["IoU-background"]
    assert _evaluate(clips, "real_frames")["avss_real_frames"]["mIoU"] == real["mIoU"]


def test_errors(tmp_path):
    clips = _clips(str(tmp_path))
    ev = AVSSEvaluator("avss_unit_test", distributed=False, num_classes=K, class_names=NAMES)
    inp, scores, _ = clips[1]
    with pytest.raises(ValueError, match=r"expected \[10, 5, 4, 6\]"):
        ev.process([inp], [{"sem_seg": scores[:, :4]}])
    ev.process([inp], [{"sem_seg": scores}])
    ev.process([inp], [{"sem_seg": scores}])
    with pytest.raises(ValueError, match="more than once"):
        ev.evaluate()
    with pytest.raises(ValueError, match="protocol"):
        AVSSEvaluator("avss_unit_test", protocol="COMBO", num_classes=K, class_names=NAMES)


# ------------------------------------------------------------------------------ 2 gloo processes vs 1
def _gloo_main(data_file, out_dir):
    from detectron2.utils import comm

    clips = torch.load(data_file, weights_only=False)
    rank, world = comm.get_rank(), comm.get_world_size()
    mine = clips[rank::world]
    for distributed in (True, False):
        ev = AVSSEvaluator("avss_unit_test", distributed=distributed, num_classes=K, class_names=NAMES)
        for inp, scores, _ in mine:
            ev.process([inp], [{"sem_seg": scores}])
        res = ev.evaluate()
        if rank == 0:
            with open(os.path.join(out_dir, f"world{world}_{'all' if distributed else 'local'}.json"), "w") as f:
                json.dump(res, f)
        else:
            assert res == {} or not distributed


def test_two_gloo_processes_match_one_process(tmp_path):
    """Each process sums its clips' per-class values; the all-reduce adds the two partial sums. The result
    differs from one process's running sum only by the order of additions (bound in the module docstring
    of test_avss_metrics.py): counts are equal, floats within 1e-12. Teeth: rank 0's own share (no reduce)
    is far off."""
    from aqformer_d2.engine import launch

    clips = _clips(str(tmp_path))
    data = str(tmp_path / "clips.pt")
    torch.save(clips, data)
    _gloo_main(data, str(tmp_path))
    launch(_gloo_main, 2, args=(data, str(tmp_path)))
    one = json.load(open(tmp_path / "world1_all.json"))["avss_official"]
    two = json.load(open(tmp_path / "world2_all.json"))["avss_official"]
    local = json.load(open(tmp_path / "world2_local.json"))["avss_official"]
    assert one.keys() == two.keys()
    for key, value in one.items():
        if isinstance(value, int):
            assert two[key] == value, key
        else:
            assert abs(two[key] - value) < TOL, key
    assert local["num_clips"] == 2 and abs(local["mIoU"] - one["mIoU"]) > 1e-3


def test_trainer_builds_the_evaluator_of_the_dataset_type(tmp_path):
    from detectron2.config import get_cfg
    from detectron2.data import DatasetCatalog

    from aqformer_d2.config import add_aqformer_config
    from aqformer_d2.data.datasets import register_avss_layout
    from aqformer_d2.engine import AQFormerTrainer
    from aqformer_d2.evaluation import AVSEvaluator, best_metric_name
    from tests.data.avss_tree import class_names, make_avss_tree

    root = make_avss_tree(str(tmp_path / "avss"), num_classes=K, clips=[("v2", "test", "n_te")])
    names = register_avss_layout("avss_trainer_unit", root, num_classes=K)
    try:
        cfg = get_cfg()
        add_aqformer_config(cfg)
        cfg.OUTPUT_DIR = str(tmp_path / "out")
        ev = AQFormerTrainer.build_evaluator(cfg, "avss_trainer_unit_test")
        assert isinstance(ev, AVSSEvaluator) and ev._protocol == "official" and ev._names == class_names(K)
        assert best_metric_name(cfg, "avss_trainer_unit_test") == "avss_official/mIoU"
        cfg.TEST.AVSS_PROTOCOL = "real_frames"
        assert AQFormerTrainer.build_evaluator(cfg, "avss_trainer_unit_v2_test")._protocol == "real_frames"
        assert best_metric_name(cfg, "avss_trainer_unit_test") == "avss_real_frames/mIoU"
        assert isinstance(AQFormerTrainer.build_evaluator(cfg, "avsbench_s4_test"), AVSEvaluator)
        assert best_metric_name(cfg, "avsbench_s4_test") == "avs/mIoU"
        DatasetCatalog.register("unit_no_type", lambda: [])
        with pytest.raises(ValueError, match="evaluator_type None"):
            AQFormerTrainer.build_evaluator(cfg, "unit_no_type")
    finally:
        for name in names + ["unit_no_type"]:
            if name in DatasetCatalog.list():
                DatasetCatalog.remove(name)
