"""Negative-audio waveforms: seeded, unit RMS, spectral slopes of white / pink / brown noise, levels."""
import numpy as np
import pytest
import torch

from aqformer_d2.audio.logmel import LOG_OFFSET, waveform_to_examples
from aqformer_d2.audio.negatives import NOISE_KINDS, coloured_noise, db_to_gain, noise, rms, scale_to_rms, silence

SR = 16000
N = 80000


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_noise_is_seeded_and_unit_rms(kind):
    a = noise(kind, np.random.default_rng(3), N, SR)
    b = noise(kind, np.random.default_rng(3), N, SR)
    c = noise(kind, np.random.default_rng(4), N, SR)
    assert a.dtype == np.float64 and a.shape == (N,)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # x / rms(x) has rms 1 up to a few ulps of the float64 mean of N squares (relative 1e-12 is ~4500 ulps).
    assert abs(rms(a) - 1.0) < 1e-12


@pytest.mark.parametrize("kind,beta", [("white_noise", 0.0), ("pink_noise", 1.0), ("brown_noise", 2.0)])
def test_power_spectrum_slope(kind, beta):
    """Fit log power against log frequency over 100 Hz - 7 kHz (octave-averaged periodogram of 10 s): the slope is
    -beta. The periodogram of 160k Gaussian samples averaged over >= 1000 bins per octave scatters by a few percent,
    so +-0.1 separates white / pink / brown (slopes 0, -1, -2) with a wide margin."""
    x = noise(kind, np.random.default_rng(0), 10 * SR, SR)
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1.0 / SR)
    edges = 100.0 * 2.0 ** np.arange(0, 7)  # 100 Hz .. 6.4 kHz
    centres, levels = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        band = (freqs >= lo) & (freqs < hi)
        centres.append(np.log10(np.sqrt(lo * hi)))
        levels.append(np.log10(power[band].mean()))
    slope = np.polyfit(centres, levels, 1)[0]
    assert abs(slope + beta) < 0.1, slope


def test_scale_to_rms_sets_the_level_relative_to_the_reference():
    x = coloured_noise(np.random.default_rng(1), N, 1.0, SR)
    for level in (0.0, -20.0, 6.0):
        y = scale_to_rms(x, 0.1, level)
        assert abs(rms(y) / (0.1 * db_to_gain(level)) - 1.0) < 1e-12
    assert db_to_gain(-20.0) == pytest.approx(0.1, rel=1e-15)
    with pytest.raises(ValueError, match="silent"):
        scale_to_rms(silence(N), 0.1, 0.0)
    with pytest.raises(ValueError, match="positive"):
        scale_to_rms(x, 0.0, 0.0)


def test_silence_through_the_front_end_is_the_log_offset_everywhere():
    examples = waveform_to_examples(silence(N), SR, num_examples=5)
    assert examples.shape == (5, 1, 96, 64)
    # |rfft(0)| = 0 exactly, so every bin is log(0 + 0.01), computed in float64 and cast to float32.
    assert torch.equal(examples, torch.full_like(examples, float(np.float32(np.log(LOG_OFFSET)))))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown noise kind"):
        noise("violet_noise", np.random.default_rng(0), N, SR)
    with pytest.raises(ValueError, match="num_samples"):
        silence(0)
