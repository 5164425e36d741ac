"""SynthAVS audio side: one characteristic sound per category, background noise, mixing.

Each category's sound differs from every other in spectral position *and* temporal structure
(harmonic tones of different pitch and timbre, rising / falling chirps, band-limited noise, tone
bursts, thumps, amplitude modulation), so it is identifiable from any single 0.96 s window of a
64-band VGGish log-mel. Instances of one category vary a little (pitch jitter of a few percent,
random phase and onset of rhythmic patterns, gain), so the sound identifies the category, not the clip.

All sounds are 5 s at 16 kHz, float64 during synthesis, and returned with unit RMS.
"""
from __future__ import annotations

from typing import Callable, Tuple

import numpy as np

__all__ = [
    "SAMPLE_RATE",
    "NUM_SECONDS",
    "NUM_SAMPLES",
    "SEGMENT_SAMPLES",
    "CATEGORY_SOUNDS",
    "category_sound",
    "background_noise",
    "segment_bounds",
    "segment_gates",
]

SAMPLE_RATE = 16000
NUM_SECONDS = 5
NUM_SAMPLES = SAMPLE_RATE * NUM_SECONDS
# One VGGish example covers 96 hops of 10 ms = 0.96 s; the per-frame sound segments of a clip
# are aligned to those examples so that example i hears exactly the sources of frame i.
SEGMENT_SAMPLES = 15360

SoundFn = Callable[[np.random.Generator, np.ndarray], np.ndarray]


def _unit_rms(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x * x)))
    if rms <= 0.0:
        raise ValueError("synthesised sound is silent")
    return x / rms


def _jitter(rng: np.random.Generator, rel: float = 0.04) -> float:
    return float(rng.uniform(1.0 - rel, 1.0 + rel))


def _band_noise(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    """White noise band-limited to [lo, hi] Hz by zeroing FFT bins."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    spec[(freqs < lo) | (freqs > hi)] = 0.0
    return np.fft.irfft(spec, n)


def _pulse_envelope(t: np.ndarray, period: float, on: float, offset: float, ramp: float = 0.006) -> np.ndarray:
    """Periodic rectangular envelope (``on`` seconds every ``period``) with short linear ramps."""
    tau = np.mod(t - offset, period)
    rise = np.clip(tau / ramp, 0.0, 1.0)
    fall = np.clip((on - tau) / ramp, 0.0, 1.0)
    return np.minimum(rise, fall)


def _harmonic(t: np.ndarray, f0: float, partials, amps, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros_like(t)
    for k, a in zip(partials, amps):
        out += a * np.sin(2.0 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
    return out


def _organ(rng, t):
    f0 = 220.0 * _jitter(rng)
    ks = np.arange(1, 9)
    amps = (1.0 / ks) * rng.uniform(0.85, 1.15, size=ks.size)
    return _harmonic(t, f0, ks, amps, rng)


def _clarinet(rng, t):
    f0 = 466.0 * _jitter(rng)
    ks = np.array([1, 3, 5, 7, 9])
    amps = (1.0 / ks) * rng.uniform(0.85, 1.15, size=ks.size)
    return _harmonic(t, f0, ks, amps, rng)


def _sweep(rng, t, f_start, f_end, period):
    """Repeating exponential sweep from f_start to f_end, ``period`` seconds per sweep."""
    period = period * _jitter(rng, 0.05)
    j = _jitter(rng)
    f_start, f_end = f_start * j, f_end * j
    tau = np.mod(t - rng.uniform(0, period), period)
    ratio = f_end / f_start
    phase = 2.0 * np.pi * f_start * period / np.log(ratio) * (np.power(ratio, tau / period) - 1.0)
    env = np.clip(np.minimum(tau, period - tau) / 0.008, 0.0, 1.0)
    return env * np.sin(phase)


def _chirp_up(rng, t):
    return _sweep(rng, t, 250.0, 1500.0, 0.5)


def _chirp_down(rng, t):
    return _sweep(rng, t, 6000.0, 2500.0, 0.32)


def _bell(rng, t):
    f0 = 600.0 * _jitter(rng)
    period = 0.48 * _jitter(rng, 0.03)
    tau = np.mod(t - rng.uniform(0, period), period)
    out = np.zeros_like(t)
    for ratio, amp, decay in ((1.0, 1.0, 0.25), (2.76, 0.6, 0.15), (5.40, 0.4, 0.1), (8.93, 0.25, 0.07)):
        out += amp * np.exp(-tau / decay) * np.sin(2.0 * np.pi * ratio * f0 * t + rng.uniform(0, 2 * np.pi))
    attack = np.clip(tau / 0.002, 0.0, 1.0)
    return out * attack


def _beeps(rng, t):
    f = 3000.0 * _jitter(rng)
    env = _pulse_envelope(t, 0.2 * _jitter(rng, 0.03), 0.12, rng.uniform(0, 0.2))
    return env * np.sin(2.0 * np.pi * f * t + rng.uniform(0, 2 * np.pi))


def _noise_bursts(rng, t):
    j = _jitter(rng)
    noise = _band_noise(rng, t.size, 1000.0 * j, 2500.0 * j)
    period = (1.0 / 6.0) * _jitter(rng, 0.03)
    return noise * _pulse_envelope(t, period, 0.06, rng.uniform(0, period))


def _am_tone(rng, t):
    f = 800.0 * _jitter(rng)
    rate = 4.0 * _jitter(rng, 0.05)
    am = 0.5 + 0.5 * np.sin(2.0 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    carrier = np.sin(2.0 * np.pi * f * t) + 0.3 * np.sin(2.0 * np.pi * 2.0 * f * t + rng.uniform(0, 2 * np.pi))
    return am * carrier


def _rumble(rng, t):
    j = _jitter(rng)
    noise = _band_noise(rng, t.size, 125.0 * j, 450.0 * j)
    slow = 1.0 + 0.3 * np.sin(2.0 * np.pi * 0.5 * t + rng.uniform(0, 2 * np.pi))
    return noise * slow


def _hiss(rng, t):
    return _band_noise(rng, t.size, 4500.0 * _jitter(rng, 0.02), 7500.0)


def _thump(rng, t):
    period = 0.3 * _jitter(rng, 0.03)
    tau = np.mod(t - rng.uniform(0, period), period)
    j = _jitter(rng)
    f_hi, f_lo, sweep = 800.0 * j, 220.0 * j, 0.1
    # Instantaneous frequency falls exponentially from f_hi to f_lo, then stays at f_lo.
    k = np.log(f_hi / f_lo) / sweep
    phase = np.where(
        tau < sweep,
        2.0 * np.pi * f_hi * (1.0 - np.exp(-k * tau)) / k,
        2.0 * np.pi * (f_hi * (1.0 - np.exp(-k * sweep)) / k + f_lo * (tau - sweep)),
    )
    body = np.exp(-tau / 0.15) * np.sin(phase) * np.clip(tau / 0.002, 0.0, 1.0)
    click = _band_noise(rng, t.size, 2000.0, 4000.0) * np.exp(-tau / 0.004) * 0.3
    return body + click


def _trill(rng, t):
    j = _jitter(rng)
    period = 0.2 * _jitter(rng, 0.03)
    high = np.mod(t - rng.uniform(0, period), period) < period / 2.0
    f = np.where(high, 1600.0 * j, 1200.0 * j)
    phase = 2.0 * np.pi * np.cumsum(f) / SAMPLE_RATE
    return np.sin(phase)


# Index i is the sound of category i (same order as shapes.CATEGORY_VISUALS).
CATEGORY_SOUNDS: Tuple[Tuple[str, SoundFn], ...] = (
    ("organ_220hz", _organ),
    ("clarinet_466hz", _clarinet),
    ("chirp_up", _chirp_up),
    ("bell", _bell),
    ("beeps_3khz", _beeps),
    ("noise_bursts", _noise_bursts),
    ("am_tone_800hz", _am_tone),
    ("chirp_down", _chirp_down),
    ("rumble", _rumble),
    ("hiss", _hiss),
    ("thump", _thump),
    ("trill", _trill),
)


def category_sound(category_id: int, rng: np.random.Generator, num_samples: int = NUM_SAMPLES) -> np.ndarray:
    """One instance of the category's sound: float64 ``[num_samples]`` with unit RMS."""
    if not 0 <= category_id < len(CATEGORY_SOUNDS):
        raise ValueError(f"category_id must be in [0, {len(CATEGORY_SOUNDS)}), got {category_id}")
    t = np.arange(num_samples, dtype=np.float64) / SAMPLE_RATE
    return _unit_rms(CATEGORY_SOUNDS[category_id][1](rng, t))


def background_noise(rng: np.random.Generator, num_samples: int = NUM_SAMPLES) -> np.ndarray:
    """Coloured background noise (spectral slope 1/f^alpha, alpha in [0.5, 1.5]) with unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(num_samples))
    freqs = np.fft.rfftfreq(num_samples, 1.0 / SAMPLE_RATE)
    alpha = rng.uniform(0.5, 1.5)
    spec = spec / np.power(np.maximum(freqs, 20.0), alpha / 2.0)
    return _unit_rms(np.fft.irfft(spec, num_samples))


def segment_bounds(num_samples: int = NUM_SAMPLES, num_segments: int = NUM_SECONDS):
    """Sample ranges ``[(start, end)]`` of the per-frame segments (the last one runs to the end)."""
    bounds = []
    for i in range(num_segments):
        start = i * SEGMENT_SAMPLES
        end = num_samples if i == num_segments - 1 else (i + 1) * SEGMENT_SAMPLES
        bounds.append((start, end))
    return bounds


def segment_gates(active: np.ndarray, num_samples: int = NUM_SAMPLES, fade: int = 160) -> np.ndarray:
    """Gain curves ``[K, num_samples]`` switching each source on/off per segment.

    Args:
        active: bool ``[num_segments, K]``, whether source k sounds in segment i.
        fade: length in samples of the raised-cosine cross-fade at segment boundaries.
    """
    active = np.asarray(active, dtype=bool)
    gates = np.zeros((active.shape[1], num_samples), dtype=np.float64)
    for i, (start, end) in enumerate(segment_bounds(num_samples, active.shape[0])):
        gates[:, start:end] = active[i][:, None]
    if fade > 1:
        window = np.hanning(fade + 2)[1:-1]
        window /= window.sum()
        # Pad with edge values so the clip edges do not fade.
        pad = fade // 2
        padded = np.pad(gates, ((0, 0), (pad, fade - 1 - pad)), mode="edge")
        gates = np.stack([np.convolve(g, window, mode="valid") for g in padded])
    return gates
