"""aqformer_d2.inference.video: image files + audio -> VideoInput, and the clip loop of predict_video (clip
planning, padding dropped, probabilities resized back to the frame size), with a segmenter whose output is
known."""
import os

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from aqformer_d2.inference import ClipSegmenter, load_frame_files, predict_video

COLORS = [10, 50, 90, 130, 170, 210, 250]  # one grey level per second


class MeanSegmenter(ClipSegmenter):
    """T = 5 clips of 16 x 16 frames; the probability map of a frame is its mean intensity / 255 everywhere."""

    backend = "test"

    def __init__(self):
        super().__init__(num_frames=5, height=16, width=16, input_format="RGB", source="test segmenter")
        self.clips = []

    def _run(self, frames, audio):
        self.clips.append((frames.clone(), audio.clone()))
        means = frames.float().mean(dim=(1, 2, 3)) / 255  # [T]
        return means[:, None, None].expand(-1, self.height, self.width).numpy().astype(np.float32)  # [T, 16, 16]


def _frames_and_wav(folder, size=(40, 30), seconds=7.0, rate=22050):
    os.makedirs(folder)
    files = []
    for i, grey in enumerate(COLORS):
        path = os.path.join(folder, f"frame_{i}.png")
        Image.fromarray(np.full((size[1], size[0], 3), grey, np.uint8)).save(path)
        files.append(path)
    t = np.arange(int(seconds * rate)) / rate
    wav = os.path.join(os.path.dirname(folder), "sound.wav")
    sf.write(wav, 0.3 * np.sin(2 * np.pi * 440 * t), rate)
    return files, wav


def test_clip_loop_plans_pads_and_resizes_back(tmp_path):
    files, wav = _frames_and_wav(str(tmp_path / "frames"))
    segmenter = MeanSegmenter()
    video = load_frame_files(files, wav, segmenter)
    assert video.num_seconds == 7 and (video.height, video.width) == (30, 40)
    assert all(f.shape == (3, 16, 16) and f.dtype == np.uint8 for f in video.frames)
    assert video.audio_seconds == pytest.approx(7.0, abs=1e-3)  # resampled to 16 kHz

    preds = list(predict_video(segmenter, video))
    assert [p.plan.seconds for p in preds] == [[0, 1, 2, 3, 4], [5, 6]]
    assert [p.plan.num_padded for p in preds] == [0, 3]
    assert [p.num_audio_examples for p in preds] == [5, 2]
    # the padded clip repeats its last real frame; the segmenter saw T = 5 frames and 5 audio examples
    last_frames, last_audio = segmenter.clips[1]
    assert last_frames.shape == (5, 3, 16, 16) and last_audio.shape == (5, 1, 96, 64)
    assert torch.equal(last_frames[2], last_frames[4]) and torch.equal(last_audio[1], last_audio[4])
    # padding dropped, back at the frame size; a constant map stays constant under bilinear resizing up to
    # float32 round-off of the interpolation weights (they sum to 1 within a few ulps: < 1e-6 for values <= 1)
    assert [p.probs.shape for p in preds] == [(5, 30, 40), (2, 30, 40)]
    probs = np.concatenate([p.probs for p in preds])  # [7, 30, 40]
    np.testing.assert_allclose(probs, np.array(COLORS, np.float32)[:, None, None] / 255 * np.ones((1, 30, 40)),
                               atol=1e-6, rtol=0)


def test_frame_files_of_another_size_are_named(tmp_path):
    files, wav = _frames_and_wav(str(tmp_path / "frames"))
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(files[3])
    with pytest.raises(ValueError, match=r"frame_3.png: frame size 20x20 differs from the first frame's 40x30"):
        load_frame_files(files, wav, MeanSegmenter())
    with pytest.raises(ValueError, match="no frame files"):
        load_frame_files([], wav, MeanSegmenter())
