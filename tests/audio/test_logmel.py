"""VGGish log-mel front end vs an independent pure-NumPy implementation written here."""
import numpy as np
import pytest
import soundfile as sf
import torch

from aqformer_d2.audio.logmel import VGGishLogMel, wav_file_to_examples, waveform_to_examples

# Tolerance in log space between the torch front end and the NumPy reference (both float64 inside).
LOG_ATOL = 1e-3


def _np_hz_to_mel(f):
    return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _np_mel_weights():
    """[257, 64] written bin by bin: rising edge (lo, center], falling edge (center, hi), DC bin 0."""
    bin_mels = _np_hz_to_mel(np.arange(257) * 8000.0 / 256)
    edges = np.linspace(_np_hz_to_mel(125.0), _np_hz_to_mel(7500.0), 66)
    weights = np.zeros((257, 64))
    for band in range(64):
        lo, center, hi = edges[band], edges[band + 1], edges[band + 2]
        for k in range(1, 257):
            m = bin_mels[k]
            if lo < m <= center:
                weights[k, band] = (m - lo) / (center - lo)
            elif center < m < hi:
                weights[k, band] = (hi - m) / (hi - center)
    return weights


def np_reference_examples(x16k):
    """Mono 16 kHz float waveform [S] -> [T, 96, 64] VGGish log-mel examples, float64."""
    x16k = np.asarray(x16k, dtype=np.float64)
    win, hop, nfft = 400, 160, 512
    num_frames = (len(x16k) - win) // hop + 1
    index = hop * np.arange(num_frames)[:, None] + np.arange(win)[None, :]  # [F, 400]
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(win) / win)  # periodic Hann
    magnitude = np.abs(np.fft.rfft(x16k[index] * window, n=nfft))  # [F, 257]
    log_mel = np.log(magnitude @ _np_mel_weights() + 0.01)  # [F, 64]
    num_examples = num_frames // 96
    return log_mel[: num_examples * 96].reshape(num_examples, 96, 64)


def _tones(t, freqs, amps):
    return sum(a * np.sin(2 * np.pi * f * t + 0.3 * i) for i, (f, a) in enumerate(zip(freqs, amps)))


def _test_signal(seconds, sr=16000, seed=0):
    t = np.arange(int(round(seconds * sr))) / sr
    noise = np.random.default_rng(seed).standard_normal(t.shape)
    return (_tones(t, [220.0, 1000.0, 3150.0], [0.3, 0.2, 0.1]) + 0.02 * noise).astype(np.float32)


def test_matches_numpy_reference_on_5s_16k():
    x = _test_signal(5.0)  # [80000]
    out = waveform_to_examples(x, 16000)
    assert out.shape == (5, 1, 96, 64) and out.dtype == torch.float32
    ref = np_reference_examples(x)
    assert ref.shape == (5, 96, 64)
    assert np.abs(out[:, 0].numpy() - ref).max() < LOG_ATOL
    # The log offset bounds the values from below; real content sits well above it.
    assert out.min() >= np.log(0.01) - 1e-6 and out.max() > 0.0


def test_tone_lands_in_its_mel_band():
    t = np.arange(16000 * 2) / 16000
    out = waveform_to_examples(np.sin(2 * np.pi * 1000.0 * t), 16000)  # [2, 1, 96, 64]
    edges = np.linspace(_np_hz_to_mel(125.0), _np_hz_to_mel(7500.0), 66)
    expected_band = int(np.argmin(np.abs(edges[1:-1] - _np_hz_to_mel(1000.0))))
    assert int(out[0, 0].mean(0).argmax()) == expected_band


@pytest.mark.parametrize("sample_rate", [48000, 44100])
def test_stereo_high_rate_input_is_downmixed_and_resampled(sample_rate):
    seconds = 2.0
    left_f, right_f = [300.0, 2500.0], [700.0, 5000.0]
    t_hi = np.arange(int(seconds * sample_rate)) / sample_rate
    stereo = np.stack([_tones(t_hi, left_f, [0.4, 0.1]), _tones(t_hi, right_f, [0.2, 0.2])]).astype(np.float32)
    out = waveform_to_examples(stereo, sample_rate)  # [2, 1, 96, 64]
    assert out.shape == (2, 1, 96, 64)
    # Reference: the same band-limited mixture synthesised directly at 16 kHz, averaged over channels.
    t16 = np.arange(int(seconds * 16000)) / 16000
    mono16 = 0.5 * (_tones(t16, left_f, [0.4, 0.1]) + _tones(t16, right_f, [0.2, 0.2]))
    diff = np.abs(out[:, 0].numpy() - np_reference_examples(mono16))  # [2, 96, 64]
    # Frame 0 sees the resampler's zero padding at the start; every other frame matches closely.
    assert diff.reshape(-1, 64)[1:].max() < LOG_ATOL
    assert diff.reshape(-1, 64)[0].max() < 0.1


def test_pad_short_clip_by_repeating_last_example():
    x = _test_signal(3.2, seed=1)  # 318 frames -> 3 complete examples
    free = waveform_to_examples(x, 16000)
    padded = waveform_to_examples(x, 16000, num_examples=5)
    assert free.shape == (3, 1, 96, 64) and padded.shape == (5, 1, 96, 64)
    assert torch.equal(padded[:3], free)
    assert torch.equal(padded[3], free[2]) and torch.equal(padded[4], free[2])
    assert not torch.equal(free[1], free[2])


def test_truncate_long_clip():
    x = _test_signal(7.0, seed=2)
    free = waveform_to_examples(x, 16000)
    assert free.shape[0] == 7
    assert torch.equal(waveform_to_examples(x, 16000, num_examples=5), free[:5])


def test_wav_file_matches_array_and_module(tmp_path):
    x = _test_signal(2.5, seed=3)
    path = tmp_path / "clip.wav"
    sf.write(path, x, 16000, subtype="PCM_16")
    from_file = wav_file_to_examples(path, num_examples=3)
    stored, _ = sf.read(path, dtype="int16")  # the PCM the file holds
    quantised = stored / 32768.0  # VGGish's wavfile_to_examples scaling
    assert from_file.shape == (3, 1, 96, 64)
    assert (from_file - waveform_to_examples(quantised, 16000, num_examples=3)).abs().max() < 1e-5
    module = VGGishLogMel(num_examples=3)
    assert torch.equal(module(torch.from_numpy(x), 16000), waveform_to_examples(x, 16000, num_examples=3))


def test_errors(tmp_path):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0,), dtype=np.int16), 16000, subtype="PCM_16")
    with pytest.raises(ValueError, match="empty.wav.*no samples"):
        wav_file_to_examples(empty)

    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(8000, dtype=np.int16), 16000, subtype="PCM_16")  # 0.5 s < one example
    with pytest.raises(ValueError, match="short.wav.*fewer than the 96"):
        wav_file_to_examples(short, num_examples=5)

    with pytest.raises(ValueError, match="floating-point"):
        waveform_to_examples(np.zeros(16000, dtype=np.int16), 16000)
    with pytest.raises(ValueError, match=r"channels-first.*\[S, C\]"):
        waveform_to_examples(np.zeros((16000, 2), dtype=np.float32), 16000)
    with pytest.raises(ValueError, match="num_examples"):
        waveform_to_examples(np.zeros(16000, dtype=np.float32), 16000, num_examples=0)
    with pytest.raises(ValueError, match="no samples"):
        waveform_to_examples(np.zeros((2, 0), dtype=np.float32), 16000)
