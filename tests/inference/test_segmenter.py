"""aqformer_d2/inference/segmenter.py: the PyTorch and ONNX Runtime backends agree, and the ONNX backend
refuses clips and configs of another T or size.

Tolerance: max |delta prob| <= 1e-4 (the issue's figure) for the random-weight model, whose logits are small
enough for the bound below to guarantee it (PARITY_TOL_RANDOM), and <= 1e-3 for the trained model, for which it
cannot be guaranteed (see below). Both backends compute in float32 but
with different kernels and fusions (ONNX Runtime folds batch norm into the convolutions, fuses LayerNorm,
uses its own GEMM/GridSample), i.e. a relative round-off of a few float32 ulps per layer. For the tiny
model (~30 layers deep, logits of magnitude < 50) that is < 50 * 30 * 1e-6 ~ 1.5e-3 in a logit in the
worst case, i.e. up to 1.5e-3 / 4 = 3.75e-4 in probability (the sigmoid's slope is at most 1/4). Typical
differences are far smaller (about 1e-6 measured on random weights), but a trained model checked in a fresh
clone once reached just over 1e-4, so 1e-4 is not a bound that holds on every machine; 1e-3 covers the worst
case on any x86-64 (AVX2 or AVX-512) and thread count, while a graph that dropped or froze an input is off
by > 1e-2.
"""
import numpy as np
import onnx
import pytest
import torch
from detectron2.modeling import build_model

from aqformer_d2.engine import build_cfg
from aqformer_d2.inference import (
    OnnxRuntimeSegmenter,
    TorchSegmenter,
    build_segmenter,
    export_clip_onnx,
)

from ..modeling.meta_arch.helpers import TINY_CONFIG, make_cfg
from .trained import synthavs_test_clips

PARITY_TOL = 1e-3
# The 1e-4, asserted where the bound above guarantees it: the random-weight model's logits stay
# below 3 in magnitude (measured 2.4), so the worst case is 3 * 30 * 1e-6 = 9e-5 in a logit, 2.3e-5 in
# probability.
PARITY_TOL_RANDOM = 1e-4
SIZE = 64


def _random_clip(seed, size=SIZE, frames=5):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (frames, 3, size, size), generator=g, dtype=torch.uint8),
            torch.randn(frames, 1, 96, 64, generator=g))


@pytest.fixture(scope="module")
def random_pair(tmp_path_factory):
    """(TorchSegmenter, OnnxRuntimeSegmenter) of one randomly initialised tiny model at 64x64."""
    torch.manual_seed(3)
    model = build_model(make_cfg(TINY_CONFIG)).eval()
    path = str(tmp_path_factory.mktemp("seg") / "tiny64.onnx")
    export_clip_onnx(model, path, num_frames=5, height=SIZE, width=SIZE, input_format="RGB")  # example: seed 0
    return TorchSegmenter(model=model, height=SIZE, width=SIZE, input_format="RGB"), \
        OnnxRuntimeSegmenter(path, num_threads=1)


def test_parity_random_weights(random_pair):
    torch_seg, ort_seg = random_pair
    outputs = []
    for seed in (101, 102):  # neither is the trace's example clip (seed 0)
        frames, audio = _random_clip(seed)
        ours, ref = ort_seg(frames, audio), torch_seg(frames, audio)
        assert ours.dtype == np.float32 and ours.shape == (5, SIZE, SIZE)
        logits = np.log(ref / (1 - ref))
        assert np.abs(logits).max() < 3.0  # the premise of PARITY_TOL_RANDOM
        assert np.abs(ours - ref).max() <= PARITY_TOL_RANDOM
        outputs.append(ours)
    # different clips give different probabilities: the frames and the audio both reach the output
    frames, audio = _random_clip(101)
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-2
    # audio alone (random weights: a small effect, measured ~3e-4; the backends differ by ~1e-6 here)
    assert np.abs(ort_seg(frames, _random_clip(102)[1]) - outputs[0]).max() > 1e-4


@pytest.fixture(scope="module")
def trained_pair(trained_tiny, tmp_path_factory):
    cfg = build_cfg(trained_tiny.config_file, trained_tiny.opts)
    torch_seg = TorchSegmenter(cfg)
    path = str(tmp_path_factory.mktemp("seg_trained") / "trained.onnx")
    export_clip_onnx(torch_seg.model, path, num_frames=5, height=SIZE, width=SIZE, input_format="RGB")
    return cfg, torch_seg, build_segmenter(cfg, "onnxruntime", path, num_threads=1)


def test_parity_trained_weights_on_synthavs_clips(trained_tiny, trained_pair):
    _, torch_seg, ort_seg = trained_pair
    clips = synthavs_test_clips(trained_tiny)
    assert len(clips) == 2
    results = []
    for clip in clips:
        ours, ref = ort_seg(clip["images"], clip["audio"]), torch_seg(clip["images"], clip["audio"])
        assert np.abs(ours - ref).max() <= PARITY_TOL
        results.append(ours)
    # trained masks are neither empty nor full, and differ between the two clips
    fg = np.mean([(r > 0.5).mean() for r in results])
    assert 0.005 < fg < 0.995, fg
    assert ((results[0] > 0.5) != (results[1] > 0.5)).mean() > 0.01


def test_torch_segmenter_from_config_loads_the_weights(trained_tiny, trained_pair):
    cfg, torch_seg, _ = trained_pair
    state = torch.load(trained_tiny.weights, map_location="cpu", weights_only=True)["model"]
    for name, value in torch_seg.model.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_onnx_of_another_t_or_size_is_refused(trained_pair):
    cfg, _, ort_seg = trained_pair
    path = ort_seg.path
    for key, value, wanted in (("MODEL.AQFORMER.NUM_FRAMES", 3, r"\[3, 3, 64, 64\]"),
                               ("INPUT.IMAGE_SIZE", 96, r"\[5, 3, 96, 96\]")):
        other = cfg.clone()
        other.defrost()
        other.merge_from_list([key, str(value)])
        with pytest.raises(ValueError, match=rf"{path}: exported for clips of T=5 frames of 64x64 "
                                             rf"\(frames \[5, 3, 64, 64\]\), but the config makes .*{wanted}"):
            build_segmenter(other, "onnxruntime", path)
    frames, audio = _random_clip(7, size=96)
    with pytest.raises(ValueError, match=rf"{path}: this model takes clips of T=5 frames of 64x64, frames "
                                         r"\[5, 3, 64, 64\] and audio \[5, 1, 96, 64\]; got frames \[5, 3, 96, 96\]"):
        ort_seg(frames, audio)
    frames, audio = _random_clip(7, frames=4)
    with pytest.raises(ValueError, match=r"got frames \[4, 3, 64, 64\] and audio \[4, 1, 96, 64\]"):
        ort_seg(frames, audio)
    with pytest.raises(ValueError, match=rf"{path}: frames must be uint8, got float32"):
        ort_seg(frames.float()[:1].expand(5, -1, -1, -1), torch.zeros(5, 1, 96, 64))
    other = cfg.clone()
    other.defrost()
    other.INPUT.FORMAT = "BGR"
    with pytest.raises(ValueError, match=rf"{path}: exported for RGB frames, but INPUT.FORMAT is BGR"):
        build_segmenter(other, "onnxruntime", path)


def test_build_segmenter_errors(tmp_path, trained_pair):
    cfg, _, ort_seg = trained_pair
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        build_segmenter(cfg, "tensorrt")
    with pytest.raises(ValueError, match="'onnxruntime' backend needs an ONNX file"):
        build_segmenter(cfg, "onnxruntime")
    with pytest.raises(ValueError, match="only used with the 'onnxruntime' backend"):
        build_segmenter(cfg, "torch", ort_seg.path)
    with pytest.raises(FileNotFoundError, match="missing.onnx: ONNX model file not found"):
        build_segmenter(cfg, "onnxruntime", str(tmp_path / "missing.onnx"))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match="garbage.onnx: onnxruntime cannot load the model"):
        OnnxRuntimeSegmenter(str(garbage))
    stripped = onnx.load(ort_seg.path)  # a valid model without our metadata
    del stripped.metadata_props[:]
    plain = str(tmp_path / "plain.onnx")
    onnx.save(stripped, plain)
    with pytest.raises(ValueError, match=r"plain.onnx: no 'aqformer.num_frames' in the model metadata"):
        OnnxRuntimeSegmenter(plain)
