"""demo/demo.py with an AVSS model (class-coloured overlay, legend, class areas), the "no sounding object"
flag of S4 and AVSS models, and --mute (the segmenter hears the log-mel of silence)."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from aqformer_d2.audio.video import iter_video_frames, probe_video
from aqformer_d2.engine import build_cfg
from aqformer_d2.inference import Legend, SoundProbabilities, clip_audio, plan_clips
from aqformer_d2.modeling import build_aq_model

from .test_demo import REPO, TINY_CONFIG, _write_frames_and_wav, demo  # noqa: F401 (demo: fixture)

AVSS_CONFIG = os.path.join(REPO, "configs", "synthavs", "aqformer_tiny_avss.yaml")
NAMES = ["background", "guitar", "dog", "car", "bell", "drum", "bird", "piano", "cat"]  # K = 9
SIZE = (80, 60)  # frame size (w, h)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """4 frames of 80x60 (one per second), a 4 s WAV, and a label2idx.json of the tiny AVSS model's 9 classes."""
    root = tmp_path_factory.mktemp("avss_inputs")
    wav = _write_frames_and_wav(str(root / "frames"), 4, SIZE, 4.0)
    label2idx = str(root / "label2idx.json")
    with open(label2idx, "w") as f:
        json.dump({name: i for i, name in enumerate(NAMES)}, f)
    return str(root / "frames"), wav, label2idx


def _avss_weights(path, winner):
    """Random tiny AVSS weights whose class head gives every query class ``winner`` (zero weights, bias +-30):
    the per-class score of ``winner`` is Σ_n σ(m_n) > 0 and every other one <= N e^-60, so the argmax is
    ``winner`` at every pixel whatever the masks."""
    cfg = build_cfg(AVSS_CONFIG, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_aq_model(cfg)
    head = model.predictor.class_head[-1]  # Linear(C, K + 1)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-30.0)
        head.bias[winner] = 30.0
    torch.save({"model": model.state_dict()}, path)
    return path


def _run(demo, inputs, out, config, opts, extra=()):
    frames, wav, label2idx = inputs
    names = ["--label2idx", label2idx] if config == AVSS_CONFIG else []
    argv = ["--config-file", config, "--input", frames, "--audio", wav, "--output", out, "--device", "cpu",
            "--no-progress", *names, *extra, "--opts", "INPUT.IMAGE_SIZE", "64", *opts]
    return demo.main(argv)


def test_avss_overlay_colours_legend_and_class_areas(demo, inputs, tmp_path):
    weights = _avss_weights(str(tmp_path / "dog.pth"), NAMES.index("dog"))
    out = str(tmp_path / "out")
    summary = _run(demo, inputs, out, AVSS_CONFIG, ["MODEL.WEIGHTS", weights])
    dog = NAMES.index("dog")
    dog_rgb = [0, 128, 0]  # AVSBench palette colour of index 2
    assert summary["output_kind"] == "class_scores"
    assert [e["name"] for e in summary["legend"]] == NAMES and summary["legend"][dog]["color"] == dog_rgb
    clip = summary["clips"][0]
    assert clip["seconds"] == [0, 1, 2, 3] and clip["num_padded_frames"] == 6  # T = 10
    assert clip["class_areas"] == [{"dog": 1.0}] * 4
    assert clip["no_sounding_object"] == [False] * 4 and summary["seconds_without_sounding_object"] == []
    with Image.open(os.path.join(out, clip["mask_files"][0])) as im:
        assert im.mode == "P" and im.size == SIZE
        assert set(np.unique(np.asarray(im))) == {dog}
        assert im.getpalette()[3 * dog: 3 * dog + 3] == dog_rgb
    # overlay: frame 0 (orange (200, 100, 30) on its left 16 columns) tinted 50 % towards the dog's colour
    # away from the legend; the legend (swatch + name) sits top left. H.264: +-12 per channel.
    frame = next(iter(iter_video_frames(os.path.join(out, "overlay.mp4"))))[1]  # [60, 80, 3]
    expected = (np.array([200, 100, 30]) >> 1) + (np.array(dog_rgb) >> 1)
    assert np.abs(frame[50:58, 2:12].astype(int) - expected).max() <= 12
    assert np.abs(frame[50:58, 40:78].astype(int) - np.array(dog_rgb) // 2).max() <= 12  # black background frame
    legend = Legend([e["name"] for e in summary["legend"]], [e["color"] for e in summary["legend"]])
    rendered = demo._render(np.zeros((60, 80, 3), np.uint8), np.full((60, 80), dog, np.uint8), legend)
    legend_area = rendered[:20, :] != (np.array(dog_rgb) >> 1)
    assert legend_area.any(axis=-1).mean() > 0.1  # swatch and text drawn over the tint
    assert (rendered[:20, :] == np.array(dog_rgb, np.uint8)).all(axis=-1).any()  # the swatch in the class colour


def test_avss_background_everywhere_is_flagged(demo, inputs, tmp_path):
    weights = _avss_weights(str(tmp_path / "bg.pth"), 0)
    out = str(tmp_path / "out")
    summary = _run(demo, inputs, out, AVSS_CONFIG, ["MODEL.WEIGHTS", weights])
    clip = summary["clips"][0]
    assert clip["class_areas"] == [{"background": 1.0}] * 4
    assert clip["no_sounding_object"] == [True] * 4
    assert summary["seconds_without_sounding_object"] == [0, 1, 2, 3]
    assert summary["num_frames_without_sounding_object"] == 4
    # the overlay says so: text drawn top left, the rest of the frame untinted
    rendered = demo._render(np.zeros((60, 80, 3), np.uint8), np.zeros((60, 80), np.uint8),
                            SoundProbabilities().legend())
    assert rendered[:20].any() and not rendered[30:].any()


@pytest.mark.parametrize("threshold,flagged", [(1.0, [0, 1, 2, 3]), (0.0, [])])
def test_s4_no_sounding_object_flag(demo, inputs, tmp_path, threshold, flagged):
    """A probability is never above 1 (every frame flagged) and a sigmoid of a finite logit of this random
    model is always above 0 (none flagged)."""
    summary = _run(demo, inputs, str(tmp_path / "out"), TINY_CONFIG,
                   ["MODEL.WEIGHTS", "", "MODEL.AQFORMER.MASK_THRESHOLD", str(threshold)])
    assert summary["output_kind"] == "sound_probs" and summary["mask_threshold"] == threshold
    assert summary["seconds_without_sounding_object"] == flagged
    flags = [f for c in summary["clips"] for f in c["no_sounding_object"]]
    assert flags == [s in flagged for s in range(4)]
    areas = [a for c in summary["clips"] for a in c["class_areas"]]
    assert all(a == {"background": 1.0} for a in areas) == bool(flagged)
    assert all(a == {"sounding object": 1.0} for a in areas) == (not flagged)


def test_mute_feeds_the_segmenter_the_log_mel_of_silence(demo, inputs, tmp_path, monkeypatch):
    heard = []
    build = demo.build_segmenter

    def recording_build(*args, **kwargs):
        segmenter = build(*args, **kwargs)
        run = segmenter._run

        def record(frames, audio):
            heard.append(torch.as_tensor(audio).clone())
            return run(frames, audio)

        segmenter._run = record
        return segmenter

    monkeypatch.setattr(demo, "build_segmenter", recording_build)
    summary = _run(demo, inputs, str(tmp_path / "loud"), TINY_CONFIG, ["MODEL.WEIGHTS", ""])
    loud = heard[:]
    heard.clear()
    summary = _run(demo, inputs, str(tmp_path / "quiet"), TINY_CONFIG, ["MODEL.WEIGHTS", ""], ["--mute"])
    assert summary["audio_muted"] and summary["overlay"]["audio"] is None
    assert not probe_video(os.path.join(str(tmp_path / "quiet"), "overlay.mp4")).has_audio
    # what the segmenter heard = the real front end on a zero waveform of the soundtrack's length (4 s)
    zeros = np.zeros(4 * 16000)
    expected = [clip_audio(zeros, 16000, plan)[0] for plan in plan_clips(4, 5)]
    assert len(heard) == len(expected) == 1
    assert torch.equal(heard[0], expected[0])
    assert torch.allclose(heard[0], torch.full_like(heard[0], float(np.log(0.01))), rtol=0, atol=1e-6)
    assert not torch.equal(loud[0], heard[0])  # the tone is not silence


def test_avss_without_class_names_is_refused(demo, inputs, tmp_path):
    frames, wav, _ = inputs
    argv = ["--config-file", AVSS_CONFIG, "--input", frames, "--audio", wav, "--output", str(tmp_path / "out"),
            "--device", "cpu", "--no-progress", "--opts", "MODEL.WEIGHTS", "", "INPUT.IMAGE_SIZE", "64",
            "DATASETS.SYNTHAVS_AVSS_ROOT", str(tmp_path / "no_dataset")]
    with pytest.raises(ValueError, match=r"synthavs_avss_test: the AVSS model needs class names .* --label2idx FILE"):
        demo.main(argv)
    assert not os.path.exists(str(tmp_path / "out"))  # refused before anything is written


def test_min_area_empties_and_flags_frames_with_small_masks(demo, inputs, tmp_path):
    """--min-area A: exactly the frames whose mask covers at most A of the frame become background and are
    flagged; the others keep their masks pixel for pixel."""
    cfg = build_cfg(TINY_CONFIG, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    weights = str(tmp_path / "s4.pth")
    torch.save({"model": build_aq_model(cfg).state_dict()}, weights)  # the same random model for both runs
    opts = ["MODEL.WEIGHTS", weights]
    plain = _run(demo, inputs, str(tmp_path / "plain"), TINY_CONFIG, opts)
    fractions = [f for c in plain["clips"] for f in c["foreground_fraction"]]
    cut = sorted(fractions)[len(fractions) // 2 - 1]  # the lower half of the frames is at most `cut`
    dropped = [f <= cut for f in fractions]
    assert any(dropped) and not all(dropped) and not any(f for c in plain["clips"] for f in c["no_sounding_object"])
    ruled = _run(demo, inputs, str(tmp_path / "ruled"), TINY_CONFIG, opts, extra=["--min-area", str(cut)])
    assert ruled["min_area"] == cut and plain["min_area"] == 0.0
    assert [f for c in ruled["clips"] for f in c["no_sounding_object"]] == dropped
    assert ruled["seconds_without_sounding_object"] == [s for s, d in enumerate(dropped) if d]
    masks = lambda summary, root: [np.asarray(Image.open(os.path.join(root, m)))  # noqa: E731
                                   for c in summary["clips"] for m in c["mask_files"]]
    for d, a, b in zip(dropped, masks(plain, str(tmp_path / "plain")), masks(ruled, str(tmp_path / "ruled"))):
        assert (not b.any()) if d else np.array_equal(a, b)
    with pytest.raises(SystemExit):
        _run(demo, inputs, str(tmp_path / "bad"), TINY_CONFIG, opts, extra=["--min-area", "1"])
