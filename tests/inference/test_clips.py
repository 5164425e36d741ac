"""aqformer_d2/inference/clips.py: clip planning, frame resizing, audio examples per clip, probability resizing."""
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from aqformer_d2.audio.logmel import waveform_to_examples
from aqformer_d2.inference.clips import (
    clip_audio,
    clip_frames,
    list_frame_folder,
    plan_clips,
    read_rgb,
    resize_frame,
    resize_probs,
)


def test_plan_clips_pads_the_last_clip():
    plans = plan_clips(12, 5)
    assert [p.seconds for p in plans] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]
    assert [p.num_padded for p in plans] == [0, 0, 3]
    assert [p.padded for p in plans] == [False, False, True]
    assert [p.index for p in plans] == [0, 1, 2]
    assert [p.seconds for p in plan_clips(5, 5)] == [[0, 1, 2, 3, 4]]
    with pytest.raises(ValueError, match="nothing to segment: 0"):
        plan_clips(0, 5)
    with pytest.raises(ValueError, match="T = 0"):
        plan_clips(3, 0)


def test_clip_frames_repeats_the_last_real_frame():
    frames = [np.full((3, 4, 4), s, np.uint8) for s in range(7)]
    plan = plan_clips(7, 5)[1]  # seconds 5, 6 + 3 padded
    clip = clip_frames(frames, plan)
    assert clip.dtype == torch.uint8 and tuple(clip.shape) == (5, 3, 4, 4)
    assert clip[:, 0, 0, 0].tolist() == [5, 6, 6, 6, 6]


def test_resize_frame_size_and_channel_order():
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30
    out = resize_frame(rgb, 16, 24)
    assert out.dtype == np.uint8 and out.shape == (3, 16, 24) and out.flags["C_CONTIGUOUS"]
    assert out[:, 5, 5].tolist() == [10, 20, 30]
    assert resize_frame(rgb, 16, 24, "BGR")[:, 5, 5].tolist() == [30, 20, 10]
    with pytest.raises(ValueError, match=r"RGB uint8 \[H, W, 3\] frame, got \[30, 40\]"):
        resize_frame(rgb[..., 0], 16, 16)
    with pytest.raises(ValueError, match="'YUV'"):
        resize_frame(rgb, 16, 16, "YUV")


def test_clip_audio_one_example_per_real_second_then_repeats():
    rate = 16000
    rng = np.random.default_rng(0)
    waveform = rng.standard_normal(7 * rate).astype(np.float32) * 0.1
    full = plan_clips(7, 5)
    examples, k = clip_audio(waveform, rate, full[0])
    assert k == 5 and tuple(examples.shape) == (5, 1, 96, 64)
    torch.testing.assert_close(examples, waveform_to_examples(waveform[: 5 * rate], rate)[:5], rtol=0, atol=0)
    last, k = clip_audio(waveform, rate, full[1])  # seconds 5, 6 + 3 padded
    assert k == 2 and tuple(last.shape) == (5, 1, 96, 64)
    for i in (2, 3, 4):
        assert torch.equal(last[i], last[1])
    assert not torch.equal(last[0], last[1])
    with pytest.raises(ValueError, match="shorter than one VGGish example"):
        clip_audio(waveform[: rate // 2], rate, plan_clips(1, 5)[0])


def test_resize_probs_matches_bilinear_interpolation():
    rng = np.random.default_rng(1)
    probs = rng.random((3, 8, 8)).astype(np.float32)
    out = resize_probs(probs, 20, 12)
    expected = F.interpolate(torch.from_numpy(probs)[None], size=(20, 12), mode="bilinear", align_corners=False)[0]
    assert out.shape == (3, 20, 12) and out.dtype == np.float32
    np.testing.assert_array_equal(out, expected.numpy())
    assert resize_probs(probs, 8, 8) is probs  # same size: no copy
    with pytest.raises(ValueError, match=r"\[T, H, W\], got \[8, 8\]"):
        resize_probs(probs[0], 4, 4)


def test_frame_folder_natural_order_and_errors(tmp_path):
    for name in ("f_10.png", "f_2.png", "f_1.jpg", "notes.txt"):
        path = tmp_path / name
        if name.endswith(".txt"):
            path.write_text("x")
        else:
            Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    assert [os.path.basename(p) for p in list_frame_folder(str(tmp_path))] == ["f_1.jpg", "f_2.png", "f_10.png"]
    with pytest.raises(NotADirectoryError, match="notes.txt: not a directory"):
        list_frame_folder(str(tmp_path / "notes.txt"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty: no image files"):
        list_frame_folder(str(empty))
    assert read_rgb(str(tmp_path / "f_2.png")).shape == (4, 4, 3)
    with pytest.raises(ValueError, match="notes.txt: cannot read image"):
        read_rgb(str(tmp_path / "notes.txt"))
