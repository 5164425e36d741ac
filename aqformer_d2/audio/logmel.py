"""VGGish-compatible log-mel front end in torch (the audio input of §3.1).

Reproduces VGGish's ``vggish_input.waveform_to_examples`` / ``mel_features`` (AudioSet release,
also used by torchvggish and by AVSBench to make its ``audio_log_mel/*.pkl`` files):

1. downmix to mono (mean over channels), resample to 16 kHz;
2. frames of 25 ms (400 samples) every 10 ms (160 samples), no padding, periodic Hann window,
   FFT length 512 (next power of two), MAGNITUDE spectrum ``|rfft|`` -> 257 bins;
3. 64 HTK-mel bands, 125-7500 Hz: triangles in mel space (mel = 1127 ln(1 + f / 700)),
   unnormalised, DC bin weight 0;
4. ``log(mel + 0.01)``;
5. non-overlapping examples of 96 frames (0.96 s): ``[T, 1, 96, 64]``.

The spectrum is computed in float64 and returned as float32.
"""
import math
import os
from typing import Optional, Union

import numpy as np
import torch
from torch import nn

from .io import read_wav, resample, to_mono

__all__ = [
    "SAMPLE_RATE",
    "NUM_MEL_BINS",
    "NUM_FRAMES",
    "hertz_to_mel",
    "periodic_hann",
    "vggish_mel_matrix",
    "log_mel_spectrogram",
    "waveform_to_examples",
    "wav_file_to_examples",
    "VGGishLogMel",
]

# VGGish front-end parameters (vggish_params.py of the AudioSet release).
SAMPLE_RATE = 16000
STFT_WINDOW_SECONDS = 0.025
STFT_HOP_SECONDS = 0.010
NUM_MEL_BINS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_WINDOW_SECONDS = 0.96
EXAMPLE_HOP_SECONDS = 0.96
# Frames per example: 0.96 s / 10 ms.
NUM_FRAMES = int(round(EXAMPLE_WINDOW_SECONDS / STFT_HOP_SECONDS))
_EXAMPLE_HOP_FRAMES = int(round(EXAMPLE_HOP_SECONDS / STFT_HOP_SECONDS))
_WIN_SAMPLES = int(round(SAMPLE_RATE * STFT_WINDOW_SECONDS))  # 400
_HOP_SAMPLES = int(round(SAMPLE_RATE * STFT_HOP_SECONDS))  # 160
_FFT_LENGTH = 1 << (_WIN_SAMPLES - 1).bit_length()  # next power of two: 512

# HTK mel scale constants.
_MEL_BREAK_HZ = 700.0
_MEL_HIGH_Q = 1127.0


def hertz_to_mel(freq_hz: torch.Tensor) -> torch.Tensor:
    """HTK mel scale: ``1127 * ln(1 + f / 700)``."""
    return _MEL_HIGH_Q * torch.log(1.0 + freq_hz / _MEL_BREAK_HZ)


def periodic_hann(window_length: int, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """Periodic Hann window ``0.5 - 0.5 cos(2 pi n / N)``, n = 0..N-1: ``[N]``."""
    n = torch.arange(window_length, dtype=dtype, device=device)
    return 0.5 - 0.5 * torch.cos(2.0 * math.pi / window_length * n)


def vggish_mel_matrix(
    num_mel_bins: int = NUM_MEL_BINS,
    num_spectrogram_bins: int = _FFT_LENGTH // 2 + 1,
    sample_rate: int = SAMPLE_RATE,
    lower_edge_hertz: float = MEL_MIN_HZ,
    upper_edge_hertz: float = MEL_MAX_HZ,
    dtype: torch.dtype = torch.float64,
    device=None,
) -> torch.Tensor:
    """Mel weight matrix ``[num_spectrogram_bins, num_mel_bins]`` that post-multiplies a spectrogram.

    Band i is a triangle in mel space with edges ``band_edges[i]``, ``band_edges[i+1]`` (peak, weight 1)
    and ``band_edges[i+2]``, where ``band_edges`` are num_mel_bins + 2 points evenly spaced in mel
    between the lower and upper edge. Spectrogram bin k sits at ``k * nyquist / (num_bins - 1)`` Hz.
    No area normalisation; the DC bin gets weight 0 (as HTK and VGGish do).
    """
    nyquist = sample_rate / 2.0
    if lower_edge_hertz < 0.0:
        raise ValueError(f"vggish_mel_matrix: lower_edge_hertz {lower_edge_hertz} must be >= 0")
    if lower_edge_hertz >= upper_edge_hertz:
        raise ValueError(
            f"vggish_mel_matrix: lower_edge_hertz {lower_edge_hertz} must be < upper_edge_hertz {upper_edge_hertz}"
        )
    if upper_edge_hertz > nyquist:
        raise ValueError(f"vggish_mel_matrix: upper_edge_hertz {upper_edge_hertz} exceeds Nyquist {nyquist}")
    bins_hz = torch.linspace(0.0, nyquist, num_spectrogram_bins, dtype=torch.float64)  # [K]
    bins_mel = hertz_to_mel(bins_hz)[:, None]  # [K, 1]
    edges = torch.linspace(
        float(hertz_to_mel(torch.tensor(lower_edge_hertz, dtype=torch.float64))),
        float(hertz_to_mel(torch.tensor(upper_edge_hertz, dtype=torch.float64))),
        num_mel_bins + 2,
        dtype=torch.float64,
    )  # [M + 2]
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]  # [M] each
    rising = (bins_mel - lower) / (center - lower)  # [K, M]
    falling = (upper - bins_mel) / (upper - center)  # [K, M]
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)  # [K, M]
    weights[0, :] = 0.0
    return weights.to(dtype=dtype, device=device)


def _as_float_tensor(waveform: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
    """Numpy array or tensor of float samples -> float64 tensor (same device), shape unchanged."""
    if isinstance(waveform, np.ndarray):
        if not np.issubdtype(waveform.dtype, np.floating):
            raise ValueError(
                f"expected floating-point samples in [-1, 1], got numpy dtype {waveform.dtype} "
                "(scale integer PCM first, e.g. int16 / 32768)"
            )
        waveform = torch.from_numpy(np.ascontiguousarray(waveform))
    elif not isinstance(waveform, torch.Tensor):
        raise TypeError(f"expected a numpy array or torch tensor waveform, got {type(waveform).__name__}")
    if not torch.is_floating_point(waveform):
        raise ValueError(
            f"expected floating-point samples in [-1, 1], got tensor dtype {waveform.dtype} "
            "(scale integer PCM first, e.g. int16 / 32768)"
        )
    return waveform.to(torch.float64)


def log_mel_spectrogram(
    waveform: torch.Tensor,
    window: Optional[torch.Tensor] = None,
    mel_matrix: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """VGGish log-mel spectrogram of a mono 16 kHz waveform ``[S]`` -> ``[F, 64]``.

    F = 1 + (S - 400) // 160 frames (no padding; a trailing partial frame is dropped).
    ``window`` ``[400]`` and ``mel_matrix`` ``[257, 64]`` may be passed pre-built (same dtype/device).
    """
    if waveform.ndim != 1:
        raise ValueError(f"log_mel_spectrogram: expected a mono waveform [S], got shape {list(waveform.shape)}")
    if waveform.shape[0] < _WIN_SAMPLES:
        raise ValueError(
            f"log_mel_spectrogram: {waveform.shape[0]} samples is shorter than one "
            f"{_WIN_SAMPLES}-sample STFT window at {SAMPLE_RATE} Hz"
        )
    if window is None:
        window = periodic_hann(_WIN_SAMPLES, dtype=waveform.dtype, device=waveform.device)
    if mel_matrix is None:
        mel_matrix = vggish_mel_matrix(dtype=waveform.dtype, device=waveform.device)
    frames = waveform.unfold(0, _WIN_SAMPLES, _HOP_SAMPLES)  # [F, 400]
    spectrum = torch.fft.rfft(frames * window, n=_FFT_LENGTH).abs()  # [F, 257] magnitude
    mel = spectrum @ mel_matrix  # [F, 64]
    return torch.log(mel + LOG_OFFSET)  # [F, 64]


def _frames_to_examples(log_mel: torch.Tensor, num_examples: Optional[int]) -> torch.Tensor:
    """``[F, 64]`` -> ``[T, 1, 96, 64]`` non-overlapping examples, padded/truncated to num_examples."""
    num_frames = log_mel.shape[0]
    if num_frames < NUM_FRAMES:
        min_samples = _WIN_SAMPLES + (NUM_FRAMES - 1) * _HOP_SAMPLES
        raise ValueError(
            f"audio gives {num_frames} log-mel frames, fewer than the {NUM_FRAMES} of one VGGish example "
            f"(needs at least {min_samples} samples = {min_samples / SAMPLE_RATE:.3f} s at {SAMPLE_RATE} Hz)"
        )
    examples = log_mel.unfold(0, NUM_FRAMES, _EXAMPLE_HOP_FRAMES).transpose(1, 2)  # [T, 96, 64]
    if num_examples is not None:
        available = examples.shape[0]
        if available < num_examples:
            pad = examples[-1:].expand(num_examples - available, -1, -1)  # [P, 96, 64]
            examples = torch.cat([examples, pad], dim=0)
        else:
            examples = examples[:num_examples]
    return examples.unsqueeze(1)  # [T, 1, 96, 64]


def _check_num_examples(num_examples: Optional[int]) -> None:
    valid_type = isinstance(num_examples, (int, np.integer)) and not isinstance(num_examples, bool)
    if num_examples is not None and (not valid_type or num_examples < 1):
        raise ValueError(f"num_examples must be None or a positive integer, got {num_examples!r}")


def _to_mono_16k(waveform: Union[np.ndarray, torch.Tensor], sample_rate: int) -> torch.Tensor:
    """Validate, downmix and resample: ``[S]`` or ``[C, S]`` at sample_rate -> float64 ``[S16]``."""
    x = _as_float_tensor(waveform)
    if x.ndim not in (1, 2):
        raise ValueError(f"expected a waveform [S] or [C, S], got shape {list(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"waveform holds no samples (shape {list(x.shape)})")
    if x.ndim == 2 and x.shape[0] > x.shape[1]:
        raise ValueError(
            f"expected a channels-first waveform [C, S], got shape {list(x.shape)} with more channels "
            "than samples (transpose a [S, C] array)"
        )
    if not torch.isfinite(x).all():
        raise ValueError("waveform holds NaN or infinite samples")
    x = to_mono(x)  # [S]
    return resample(x, sample_rate, SAMPLE_RATE)  # [S16]


def waveform_to_examples(
    waveform: Union[np.ndarray, torch.Tensor],
    sample_rate: int,
    num_examples: Optional[int] = None,
) -> torch.Tensor:
    """Waveform -> VGGish input examples ``[T, 1, 96, 64]`` (float32, on the waveform's device).

    Args:
        waveform: float samples in [-1, 1], mono ``[S]`` or channels-first ``[C, S]`` (averaged to mono).
        sample_rate: rate of ``waveform`` in Hz; anything but 16 kHz is resampled (after the downmix).
        num_examples: None keeps every complete 0.96 s example (T = floor((F - 96) / 96) + 1).
            An integer fixes T: shorter audio is padded by repeating its last example and longer
            audio is truncated to the first ``num_examples`` examples. This matches AVSBench's
            preprocessing of its 5 s clips (``num_examples=5``, ``audio_log_mel/*.pkl``).

    Raises:
        ValueError: non-float or empty input, wrong shape, or audio shorter than one example (0.975 s).
    """
    _check_num_examples(num_examples)
    mono = _to_mono_16k(waveform, sample_rate)  # [S16]
    log_mel = log_mel_spectrogram(mono)  # [F, 64]
    return _frames_to_examples(log_mel, num_examples).to(torch.float32)  # [T, 1, 96, 64]


def wav_file_to_examples(path: Union[str, os.PathLike], num_examples: Optional[int] = None) -> torch.Tensor:
    """Read an audio file (see :func:`aqformer_d2.audio.io.read_wav`) and return ``[T, 1, 96, 64]`` examples.

    Errors name the file. See :func:`waveform_to_examples` for ``num_examples``.
    """
    waveform, sample_rate = read_wav(path)  # [S] or [C, S]
    try:
        return waveform_to_examples(waveform, sample_rate, num_examples)
    except ValueError as e:
        raise ValueError(f"{os.fspath(path)}: {e}") from e


class VGGishLogMel(nn.Module):
    """Module form of :func:`waveform_to_examples`; the window and mel matrix are cached buffers.

    Args:
        num_examples: fixed number of examples T (pad by repeating the last / truncate), or None.
    """

    def __init__(self, num_examples: Optional[int] = None):
        super().__init__()
        _check_num_examples(num_examples)
        self.num_examples = num_examples
        self.register_buffer("window", periodic_hann(_WIN_SAMPLES), persistent=False)  # [400]
        self.register_buffer("mel_matrix", vggish_mel_matrix(), persistent=False)  # [257, 64]

    def forward(self, waveform: Union[np.ndarray, torch.Tensor], sample_rate: int) -> torch.Tensor:
        """waveform ``[S]`` or ``[C, S]`` at sample_rate -> ``[T, 1, 96, 64]`` float32."""
        mono = _to_mono_16k(waveform, sample_rate).to(self.window.device)  # [S16] float64
        log_mel = log_mel_spectrogram(mono, self.window.to(torch.float64), self.mel_matrix.to(torch.float64))
        return _frames_to_examples(log_mel, self.num_examples).to(torch.float32)  # [T, 1, 96, 64]

    def extra_repr(self) -> str:
        return f"num_examples={self.num_examples}, sample_rate={SAMPLE_RATE}"
