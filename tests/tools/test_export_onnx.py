"""tools/export_onnx.py: one ONNX file with the trained weights, its metadata and its verification."""
import importlib.util
import os

import numpy as np
import onnx
import pytest
import torch

from aqformer_d2.engine import build_cfg
from aqformer_d2.inference import OnnxRuntimeSegmenter, TorchSegmenter

from ..inference.trained import synthavs_test_clips

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("aqformer_export_onnx_tool", os.path.join(REPO, "tools", "export_onnx.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exported(tool, trained_tiny, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("export") / "sub" / "model.onnx")  # the folder is created
    summary = tool.main(["--config-file", trained_tiny.config_file, "--output", path] + trained_tiny.opts)
    return path, summary


def test_summary_metadata_and_verification(exported, trained_tiny):
    path, summary = exported
    assert summary["output"] == os.path.abspath(path) and summary["size_bytes"] == os.path.getsize(path)
    assert 0.0 <= summary["verify_max_abs_delta_prob"] <= 1e-3
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert props == summary["metadata"]
    assert props["aqformer.weights"] == trained_tiny.weights
    assert props["aqformer.config_file"] == os.path.abspath(trained_tiny.config_file)
    assert (props["aqformer.num_frames"], props["aqformer.height"], props["aqformer.width"]) == ("5", "64", "64")
    graph = onnx.load(path).graph
    assert [v.name for v in graph.input] == ["frames", "audio"] and [v.name for v in graph.output] == ["probs"]


def test_exported_file_matches_pytorch_on_synthavs_clips(exported, trained_tiny):
    """The file holds the trained weights: ONNX Runtime on real SynthAVS clips (not the trace's random
    example) matches PyTorch eager with the checkpoint, max |delta prob| <= 1e-3 (the bound is derived in
    tests/inference/test_segmenter.py)."""
    path, _ = exported
    ort_seg = OnnxRuntimeSegmenter(path, num_threads=1)
    torch_seg = TorchSegmenter(build_cfg(trained_tiny.config_file, trained_tiny.opts))
    for clip in synthavs_test_clips(trained_tiny):
        assert np.abs(ort_seg(clip["images"], clip["audio"]) - torch_seg(clip["images"], clip["audio"])).max() <= 1e-3
    # and not the random initialisation: a fresh model of the same config gives other probabilities
    torch.manual_seed(0)
    cfg = build_cfg(trained_tiny.config_file, [o for o in trained_tiny.opts] + ["MODEL.WEIGHTS", ""])
    fresh = TorchSegmenter(cfg)
    assert np.abs(ort_seg(clip["images"], clip["audio"]) - fresh(clip["images"], clip["audio"])).max() > 1e-2


def test_bad_arguments_are_named(tool, trained_tiny, tmp_path):
    out = ["--output", str(tmp_path / "m.onnx")]
    with pytest.raises(FileNotFoundError, match="nope.yaml: config file not found"):
        tool.main(["--config-file", str(tmp_path / "nope.yaml")] + out)
    with pytest.raises(ValueError, match="KEY VALUE pairs"):
        tool.main(["--config-file", trained_tiny.config_file] + out + ["MODEL.WEIGHTS"])
    with pytest.raises(FileNotFoundError, match="missing.pth: MODEL.WEIGHTS file not found"):
        tool.main(["--config-file", trained_tiny.config_file] + out + ["MODEL.WEIGHTS", str(tmp_path / "missing.pth")])
    assert not os.path.exists(tmp_path / "m.onnx")
