"""train_net.py end to end for AVSS: the tiny AVSS config trains 2 iterations on a tiny generated
SynthAVS-semantic (5-frame v1s / v1m clips padded to 10 with 10-frame v2 clips), evaluates with the official
AVSS metric, and --eval-only with MODEL.WEIGHTS reproduces it (and scores the COMBO protocol on request)."""
import json
import os

import pytest

import train_net
from aqformer_d2.data.synthavs import generate_synthavs_semantic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "synthavs", "aqformer_tiny_avss.yaml")
K = 9


@pytest.fixture(scope="module")
def avss_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthavs_semantic")
    generate_synthavs_semantic(str(root), seed=5, n_train=2, n_val=1, n_test=1, image_size=32)
    return str(root)


def _argv(root, out, *extra):
    opts = {
        "DATASETS.SYNTHAVS_AVSS_ROOT": root, "OUTPUT_DIR": out, "INPUT.IMAGE_SIZE": 32, "SOLVER.IMS_PER_BATCH": 2,
        "SOLVER.WARMUP_ITERS": 0, "SOLVER.MAX_ITER": 2, "SEED": 3, "MODEL.AQ_TRANSFORMER_DECODER.DEC_STAGES": 1,
        "MODEL.AQ_SEMANTIC.NUM_QUERIES": 4,
    }
    return ["--config-file", CONFIG, *extra] + [str(x) for kv in opts.items() for x in kv]


def _run(argv):
    return train_net.main(train_net.default_argument_parser().parse_args(argv))


def test_avss_trains_and_evaluates_from_train_net(avss_root, tmp_path):
    out = str(tmp_path / "train")
    results = _run(_argv(avss_root, out))
    assert set(results) == {"avss_official"}  # the protocol names the table
    res = results["avss_official"]
    # 1 test clip per subset: v1s and v1m padded 5 -> 10 frames, v2 has 10; official scores all 30 frames
    assert (res["num_clips"], res["num_frames"], res["num_padded_frames"]) == (3, 30, 10)
    assert 0.0 <= res["mIoU"] <= 1.0 and 0.0 <= res["Fscore"] <= 1.0
    names = json.load(open(os.path.join(avss_root, "label2idx.json")))
    assert len(names) == K and all(f"IoU-{n}" in res and f"frames-{n}" in res for n in names)
    assert res["frames-background"] == 30  # every scored frame has background (padded ones are all background)
    assert os.path.exists(os.path.join(out, "model_final.pth"))
    assert os.path.exists(os.path.join(out, "inference", "avss_metrics.json"))

    # --eval-only with the trained weights gives the same figures; the COMBO protocol scores real frames only
    weights = ["MODEL.WEIGHTS", os.path.join(out, "model_final.pth")]
    again = _run(_argv(avss_root, str(tmp_path / "eval"), "--eval-only") + weights)
    for key in ("mIoU", "Fscore", "mIoU_noBg", "num_frames"):
        assert again["avss_official"][key] == pytest.approx(res[key], abs=1e-9), key
    real = _run(_argv(avss_root, str(tmp_path / "eval_real"), "--eval-only") + weights
                + ["TEST.AVSS_PROTOCOL", "real_frames"])
    assert set(real) == {"avss_real_frames"}
    assert (real["avss_real_frames"]["num_frames"], real["avss_real_frames"]["num_padded_frames"]) == (20, 0)
