"""demo/demo.py end to end with a randomly initialised tiny model: a video file, and frames + audio."""
import importlib.util
import json
import os
import sys

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from aqformer_d2.audio.video import decode_audio, iter_video_frames, probe_video

from ..audio.test_video import bigbuckbunny_path

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CONFIG = os.path.join(REPO, "configs", "synthavs", "Base-Tiny.yaml")


@pytest.fixture(scope="module")
def demo():
    """demo/demo.py as a module."""
    demo_dir = os.path.join(REPO, "demo")
    sys.path.insert(0, demo_dir)
    try:
        spec = importlib.util.spec_from_file_location("aqformer_demo_main", os.path.join(demo_dir, "demo.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(demo_dir)


def _read_mask(path):
    with Image.open(path) as im:
        return im.mode, im.size, np.asarray(im)


@pytest.fixture(scope="module")
def bbb_run(demo, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("demo_bbb"))
    argv = ["--config-file", TINY_CONFIG, "--input", bigbuckbunny_path(), "--output", out, "--device", "cpu",
            "--no-progress", "--opts", "MODEL.WEIGHTS", ""]
    summary = demo.main(argv)
    return out, summary


def test_bigbuckbunny_masks(bbb_run):
    out, summary = bbb_run
    # 5.28 s at 25 fps: frames in seconds 0..5 -> 6 sampled frames (last frame of each second).
    assert summary["num_sampled_frames"] == 6
    assert summary["num_video_frames"] == 132
    pngs = sorted(os.listdir(os.path.join(out, "masks")))
    assert len(pngs) == summary["num_sampled_frames"]
    for clip in summary["clips"]:
        for sec, name, frac in zip(clip["seconds"], clip["mask_files"], clip["foreground_fraction"]):
            assert os.path.basename(name) == f"clip{clip['index']:04d}_sec{sec:05d}.png"
            mode, size, arr = _read_mask(os.path.join(out, name))
            assert size == (1280, 720) and mode == "P"
            assert set(np.unique(arr)) <= {0, 1}  # label values: background, sounding object
            assert frac == pytest.approx((arr > 0).mean(), abs=1e-5)


def test_bigbuckbunny_summary(bbb_run):
    out, summary = bbb_run
    with open(os.path.join(out, "summary.json")) as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(summary))
    assert (saved["width"], saved["height"]) == (1280, 720)
    assert saved["fps"] == 25.0 and saved["duration"] == pytest.approx(5.28, abs=0.05)
    assert saved["weights"] is None and saved["device"] == "cpu"
    assert saved["num_clips"] == len(saved["clips"]) == 2
    assert [c["seconds"] for c in saved["clips"]] == [[0, 1, 2, 3, 4], [5]]
    assert [c["padded"] for c in saved["clips"]] == [False, True]
    assert saved["clips"][1]["num_padded_frames"] == 4
    assert saved["clips"][0]["num_audio_examples"] == 5
    assert saved["clips"][1]["num_audio_examples"] == 1 and saved["clips"][1]["num_padded_audio_examples"] == 4
    assert saved["clips"][0]["frame_times"] == pytest.approx([0.96, 1.96, 2.96, 3.96, 4.96])
    assert "padded" in saved["padding"] and "last" in saved["frame_sampling"]


def test_bigbuckbunny_overlay_video(bbb_run):
    out, summary = bbb_run
    path = os.path.join(out, "overlay.mp4")
    info = probe_video(path)
    assert (info.width, info.height) == (1280, 720)
    assert info.fps == 25
    assert info.has_audio and info.audio_codec == "aac" and info.audio_channels == 6
    assert sum(1 for _ in iter_video_frames(path)) == 132
    audio, rate = decode_audio(path)
    assert rate == 48000 and audio.shape[1] / rate == pytest.approx(5.312, abs=0.05)


def test_overlay_tints_mask_pixels_only(demo):
    """The demo's frame = the package's class overlay (background untinted), with the legend drawn top left."""
    from aqformer_d2.inference import Legend
    from aqformer_d2.utils.visualize import overlay_classes

    rgb = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    labels = np.zeros((120, 160), np.uint8)
    labels[80:100, 100:140] = 1
    labels[110:, 60:90] = 2
    colors = np.array([[9, 9, 9], [255, 40, 40], [0, 128, 64]], np.uint8)
    out = demo._render(rgb, labels, Legend(["background", "dog", "car"], colors))
    below_legend = np.s_[70:, 50:]  # the legend of two classes sits in the top-left corner
    np.testing.assert_array_equal(out[below_legend], overlay_classes(rgb, labels, colors)[below_legend])
    shown, frame, lab = out[below_legend], rgb[below_legend], labels[below_legend]
    np.testing.assert_array_equal(shown[lab == 0], frame[lab == 0])  # background: not tinted
    assert (shown[lab == 1] != frame[lab == 1]).any()
    assert (out[:40, :50] != rgb[:40, :50]).any()  # legend drawn


def _write_frames_and_wav(folder, n, size, seconds, rate=22050):
    os.makedirs(folder)
    w, h = size
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:, : (i + 1) * w // (n + 1)] = (200, 100, 30)
        Image.fromarray(img).save(os.path.join(folder, f"frame_{i + 1}.png"))
    t = np.arange(int(seconds * rate)) / rate
    wav = os.path.join(os.path.dirname(folder), "sound.wav")
    sf.write(wav, np.stack([np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 500 * t)], 1) * 0.3, rate)
    return wav


def test_frames_folder_and_wav(demo, tmp_path):
    frames = str(tmp_path / "frames")
    wav = _write_frames_and_wav(frames, 7, (80, 60), 7.0)
    out = str(tmp_path / "out")
    summary = demo.main(["--config-file", TINY_CONFIG, "--input", frames, "--audio", wav, "--output", out,
                         "--device", "cpu", "--no-progress", "--opts", "MODEL.WEIGHTS", "", "INPUT.IMAGE_SIZE", "64"])
    assert summary["input_type"] == "frames" and summary["num_sampled_frames"] == 7
    assert [c["seconds"] for c in summary["clips"]] == [[0, 1, 2, 3, 4], [5, 6]]
    assert summary["clips"][1]["padded"] and summary["clips"][1]["num_padded_frames"] == 3
    assert summary["clips"][1]["num_audio_examples"] == 2
    pngs = sorted(os.listdir(os.path.join(out, "masks")))
    assert len(pngs) == 7
    assert all(_read_mask(os.path.join(out, "masks", p))[1] == (80, 60) for p in pngs)
    info = probe_video(os.path.join(out, "overlay.mp4"))
    assert (info.width, info.height, info.fps) == (80, 60, 1)
    assert info.has_audio and info.audio_sample_rate == 22050 and info.audio_channels == 2
    assert sum(1 for _ in iter_video_frames(os.path.join(out, "overlay.mp4"))) == 7


def test_bad_inputs_are_named(demo, tmp_path):
    base = ["--config-file", TINY_CONFIG, "--output", str(tmp_path / "out"), "--device", "cpu", "--no-progress",
            "--opts", "MODEL.WEIGHTS", "", "INPUT.IMAGE_SIZE", "64"]
    frames = str(tmp_path / "frames")
    wav = _write_frames_and_wav(frames, 3, (40, 30), 3.0)
    with pytest.raises(ValueError, match="frames.*needs an audio file"):
        demo.main(["--input", frames] + base)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(os.path.join(frames, "frame_9.png"))
    with pytest.raises(ValueError, match=r"frame_9.png: frame size 20x20 differs"):
        demo.main(["--input", frames, "--audio", wav] + base)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        demo.main(["--input", str(tmp_path / "missing.mp4")] + base)
    with pytest.raises(FileNotFoundError, match="weights.pth"):
        demo.main(["--input", frames, "--audio", wav] + base + ["MODEL.WEIGHTS", str(tmp_path / "weights.pth")])


def test_video_without_sound_needs_audio(demo, tmp_path):
    from aqformer_d2.audio.video import write_video

    silent = str(tmp_path / "silent.mp4")
    write_video(silent, (np.full((32, 48, 3), 10 * i, np.uint8) for i in range(10)), 48, 32, 5)
    argv = ["--config-file", TINY_CONFIG, "--input", silent, "--output", str(tmp_path / "out"), "--device", "cpu",
            "--no-progress", "--opts", "MODEL.WEIGHTS", "", "INPUT.IMAGE_SIZE", "64"]
    with pytest.raises(ValueError, match=r"silent.mp4: the video has no audio stream"):
        demo.main(argv)


# ------------------------------------------------------------------ ONNX Runtime backend
@pytest.fixture(scope="module")
def export_tool():
    tools_dir = os.path.join(REPO, "tools")
    spec = importlib.util.spec_from_file_location("aqformer_export_onnx_tool", os.path.join(tools_dir, "export_onnx.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained_onnx(trained_tiny, export_tool, tmp_path_factory):
    """tools/export_onnx.py applied to the trained tiny model (T = 5, 64x64)."""
    path = str(tmp_path_factory.mktemp("demo_onnx") / "trained.onnx")
    export_tool.main(["--config-file", trained_tiny.config_file, "--output", path] + trained_tiny.opts)
    return path


def _synthavs_frames_folder(trained_tiny, folder, size):
    """The frames of the two SynthAVS-S4 test clips, one after the other, resized to ``size`` (w, h), and a
    WAV of their two sound tracks (10 s)."""
    from detectron2.data import DatasetCatalog

    from aqformer_d2.engine import build_cfg

    build_cfg(trained_tiny.config_file, trained_tiny.opts)  # registers SynthAVS at this root
    records = DatasetCatalog.get("synthavs_s4_test")
    os.makedirs(folder)
    frame_files = [path for record in records for path in record["frame_files"]]
    for i, path in enumerate(frame_files):
        with Image.open(path) as im:
            im.convert("RGB").resize(size, Image.BILINEAR).save(os.path.join(folder, f"frame_{i + 1}.png"))
    tracks = [sf.read(record["audio_wav_file"], dtype="float32") for record in records]
    if len({rate for _, rate in tracks}) != 1:
        raise ValueError(f"SynthAVS test clips with different sample rates: {[rate for _, rate in tracks]}")
    wav = os.path.join(os.path.dirname(folder), "sound.wav")
    sf.write(wav, np.concatenate([samples for samples, _ in tracks]), tracks[0][1])
    return wav, len(frame_files)


def test_demo_masks_of_both_backends_agree(demo, trained_tiny, trained_onnx, tmp_path):
    """Trained weights, two SynthAVS clips enlarged to 160x120 (the model sees 64x64, the masks are resized
    back): the masks of PyTorch eager and ONNX Runtime agree on >= 99.9% of the pixels."""
    frames = str(tmp_path / "frames")
    wav, num_frames = _synthavs_frames_folder(trained_tiny, frames, (160, 120))
    base = ["--config-file", trained_tiny.config_file, "--input", frames, "--audio", wav, "--no-progress", "--opts"]
    s_torch = demo.main(["--output", str(tmp_path / "torch"), "--device", "cpu", "--backend", "torch"]
                        + base + trained_tiny.opts)
    s_ort = demo.main(["--output", str(tmp_path / "ort"), "--backend", "onnxruntime", "--onnx", trained_onnx]
                      + base + trained_tiny.opts)
    assert (s_torch["backend"], s_ort["backend"]) == ("torch", "onnxruntime")
    assert s_ort["onnx"] == os.path.abspath(trained_onnx) and s_ort["device"] == "cpu"
    assert s_torch["weights"] == s_ort["weights"] == trained_tiny.weights
    names = [n for clip in s_torch["clips"] for n in clip["mask_files"]]
    assert names == [n for clip in s_ort["clips"] for n in clip["mask_files"]] and len(names) == num_frames == 10
    a = np.stack([_read_mask(os.path.join(tmp_path, "torch", n))[2] for n in names]) > 0  # [10, 120, 160]
    b = np.stack([_read_mask(os.path.join(tmp_path, "ort", n))[2] for n in names]) > 0
    assert a.shape == (10, 120, 160)
    assert 0.005 < a.mean() < 0.995, a.mean()  # trained masks: neither empty nor full
    assert (a == b).mean() >= 0.999


def test_demo_refuses_an_onnx_file_of_another_size(demo, trained_tiny, trained_onnx, tmp_path):
    frames = str(tmp_path / "frames")
    wav = _write_frames_and_wav(frames, 3, (40, 30), 3.0)
    argv = ["--config-file", trained_tiny.config_file, "--input", frames, "--audio", wav, "--output",
            str(tmp_path / "out"), "--no-progress", "--backend", "onnxruntime", "--onnx", trained_onnx, "--opts"]
    with pytest.raises(ValueError, match=rf"{trained_onnx}: exported for clips of T=5 frames of 64x64 \(frames "
                                         r"\[5, 3, 64, 64\]\), but the config makes clips of T=5 frames of 96x96 "
                                         r"\(frames \[5, 3, 96, 96\]"):
        demo.main(argv + trained_tiny.opts + ["INPUT.IMAGE_SIZE", "96"])
    with pytest.raises(ValueError, match=r"frames \[5, 3, 64, 64\]\), but the config makes clips of T=4 frames"):
        demo.main(argv + trained_tiny.opts + ["MODEL.AQFORMER.NUM_FRAMES", "4"])


def test_demo_backend_arguments(demo, trained_onnx, tmp_path):
    frames = str(tmp_path / "frames")
    wav = _write_frames_and_wav(frames, 2, (40, 30), 2.0)
    base = ["--config-file", TINY_CONFIG, "--input", frames, "--audio", wav, "--output", str(tmp_path / "out"),
            "--no-progress"]
    with pytest.raises(ValueError, match="--backend onnxruntime needs --onnx FILE"):
        demo.main(base + ["--backend", "onnxruntime"])
    with pytest.raises(ValueError, match="--device cuda: --backend onnxruntime runs on the cpu"):
        demo.main(base + ["--backend", "onnxruntime", "--onnx", trained_onnx, "--device", "cuda"])
    with pytest.raises(ValueError, match="only used with --backend onnxruntime"):
        demo.main(base + ["--onnx", trained_onnx])
    with pytest.raises(FileNotFoundError, match="nothing.onnx: ONNX model file not found"):
        demo.main(base + ["--backend", "onnxruntime", "--onnx", str(tmp_path / "nothing.onnx")])
