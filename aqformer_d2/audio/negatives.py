"""Negative audio: waveforms in which no on-screen object sounds (silence, noise), as pure seeded functions.

A negative waveform replaces a clip's soundtrack to ask whether a model stays silent when nothing on
screen makes the sound (docs/listening.md). This module makes the waveforms only; the data layer
(:mod:`aqformer_d2.data.negative_audio`) picks a kind and level per clip, adds the off-screen sound (a
SynthAVS category absent from the clip) and turns the waveform into log-mel examples with the real
front end (:func:`aqformer_d2.audio.logmel.waveform_to_examples`), so silence is zeros *through* the
front end (``log(0 + 0.01)`` in every bin), not zero examples.

Definitions (S samples of float64 mono audio):

* silence: ``x = 0``.
* white noise: i.i.d. standard normal samples (flat power spectrum).
* pink / brown noise ("ambient-like"): white noise shaped in the frequency domain so that the power
  spectrum falls as ``1 / f^beta`` (pink: beta = 1, -3 dB per octave, like rain or wind; brown: beta = 2,
  -6 dB per octave, like distant traffic or surf). Bins below 20 Hz are shaped as 20 Hz (no DC blow-up).
* level: every noise is returned with unit RMS; :func:`scale_to_rms` sets it ``level_db`` dB relative to a
  reference RMS (the clip's own, so 0 dB = as loud as the clip's soundtrack).
"""
from __future__ import annotations

from typing import Dict

import numpy as np

__all__ = [
    "NOISE_KINDS",
    "NOISE_EXPONENTS",
    "rms",
    "silence",
    "coloured_noise",
    "noise",
    "scale_to_rms",
    "db_to_gain",
]

# Spectral exponent beta of each noise kind: power spectrum ~ 1 / f^beta.
NOISE_EXPONENTS: Dict[str, float] = {"white_noise": 0.0, "pink_noise": 1.0, "brown_noise": 2.0}
NOISE_KINDS = tuple(NOISE_EXPONENTS)
# Frequencies below this are shaped as this one (keeps 1/f^beta finite at DC), in Hz.
_LOWEST_SHAPED_HZ = 20.0


def _check_num_samples(num_samples: int) -> int:
    if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    return int(num_samples)


def rms(waveform: np.ndarray) -> float:
    """Root mean square of ``waveform`` ``[S]`` or ``[C, S]`` (all samples), computed in float64."""
    x = np.asarray(waveform, dtype=np.float64)
    if x.size == 0:
        raise ValueError("rms: the waveform holds no samples")
    return float(np.sqrt(np.mean(x * x)))


def db_to_gain(level_db: float) -> float:
    """Amplitude gain of ``level_db`` decibels: ``10 ** (level_db / 20)``."""
    return float(10.0 ** (float(level_db) / 20.0))


def silence(num_samples: int) -> np.ndarray:
    """float64 ``[num_samples]`` zeros."""
    return np.zeros(_check_num_samples(num_samples), dtype=np.float64)


def coloured_noise(rng: np.random.Generator, num_samples: int, exponent: float, sample_rate: int) -> np.ndarray:
    """Gaussian noise with power spectrum ~ ``1 / f^exponent``, unit RMS: float64 ``[num_samples]``.

    Args:
        rng: the generator every sample is drawn from (the result is a pure function of its state).
        num_samples: S.
        exponent: beta (0 white, 1 pink, 2 brown).
        sample_rate: Hz, places the FFT bins on the frequency axis.
    """
    n = _check_num_samples(num_samples)
    white = rng.standard_normal(n)  # [S]
    if exponent != 0.0:
        spec = np.fft.rfft(white)  # [S // 2 + 1]
        freqs = np.maximum(np.fft.rfftfreq(n, 1.0 / sample_rate), _LOWEST_SHAPED_HZ)  # [S // 2 + 1]
        white = np.fft.irfft(spec / np.power(freqs, exponent / 2.0), n)  # amplitude ~ f^(-beta/2): [S]
    level = rms(white)
    if level <= 0.0:
        raise ValueError("coloured_noise: the drawn noise is silent (num_samples too small?)")
    return white / level


def noise(kind: str, rng: np.random.Generator, num_samples: int, sample_rate: int) -> np.ndarray:
    """Unit-RMS noise of ``kind`` (one of :data:`NOISE_KINDS`): float64 ``[num_samples]``."""
    if kind not in NOISE_EXPONENTS:
        raise ValueError(f"unknown noise kind {kind!r}; expected one of {NOISE_KINDS}")
    return coloured_noise(rng, num_samples, NOISE_EXPONENTS[kind], sample_rate)


def scale_to_rms(waveform: np.ndarray, reference_rms: float, level_db: float) -> np.ndarray:
    """``waveform`` scaled to RMS ``reference_rms * 10^(level_db / 20)``: float64, same shape.

    Raises:
        ValueError: ``waveform`` is silent (nothing to scale) or ``reference_rms`` is not positive.
    """
    if not reference_rms > 0.0:
        raise ValueError(f"scale_to_rms: reference RMS must be positive, got {reference_rms}")
    current = rms(waveform)
    if current <= 0.0:
        raise ValueError("scale_to_rms: the waveform is silent; a level relative to a reference is undefined")
    return np.asarray(waveform, dtype=np.float64) * (reference_rms * db_to_gain(level_db) / current)

