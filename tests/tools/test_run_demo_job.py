"""The README's main job (tools/run_demo_job.py) end to end on a small SynthAVS and 3 iterations."""
import json
import os
import sys

import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tools"))

import run_demo_job  # noqa: E402


def test_main_job_writes_metrics_curve_and_overlays(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "data"))
    out = tmp_path / "job"
    summary = run_demo_job.main(["--output", str(out), "--iters", "3", "--synthavs-clips", "4", "2", "3",
                                 "--num-overlays", "2", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0"])
    assert (tmp_path / "data" / "SynthAVS" / "synthavs_manifest.json").is_file()
    for name in ("summary.json", "metrics.json", "loss_curve.png", "overlays.png", "model_final.pth"):
        assert (out / name).is_file(), name
    with open(out / "summary.json") as f:
        on_disk = json.load(f)
    assert on_disk["iterations"] == 3 and on_disk["test_dataset"] == "synthavs_s4_test"
    avs = on_disk["results"]["avs"]
    assert 0.0 <= avs["mIoU"] <= 1.0 and 0.0 <= avs["Fscore"] <= 1.0
    assert avs["num_videos"] == 3
    assert summary["results"] == on_disk["results"]
    grid = Image.open(out / "overlays.png")
    assert grid.size[0] == 5 * 128  # T tiles per row
    assert grid.size[1] == 2 * 2 * (128 + 14)  # 2 clips x (ground truth row + prediction row)
