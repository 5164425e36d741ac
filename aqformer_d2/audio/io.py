"""Waveform I/O: read WAV files with soundfile, downmix to mono, resample with torchaudio.

This package sits below ``aqformer_d2.modeling`` and ``aqformer_d2.data`` and imports neither.
Multi-channel waveforms are channels-first, ``[C, S]`` (C channels, S samples).
"""
import logging
import os
from typing import Tuple, Union

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

__all__ = ["read_wav", "to_mono", "resample", "KAISER_BEST"]

logger = logging.getLogger(__name__)

Waveform = Union[np.ndarray, torch.Tensor]

# torchaudio settings that approximate resampy's "kaiser_best" filter, the resampler used by
# VGGish's reference front end (values from torchaudio's resampling documentation).
KAISER_BEST = dict(
    lowpass_filter_width=64,
    rolloff=0.9475937167399596,
    resampling_method="sinc_interp_kaiser",
    beta=14.769656459379492,
)


def read_wav(path: Union[str, os.PathLike]) -> Tuple[np.ndarray, int]:
    """Read an audio file (WAV, FLAC, ... anything libsndfile reads) as float32 samples.

    Integer PCM is scaled to [-1, 1) (int16 samples are divided by 32768, like VGGish's
    ``wavfile_to_examples``).

    Args:
        path: file to read.

    Returns:
        ``(waveform, sample_rate)``: waveform is float32 ``[S]`` for a mono file and ``[C, S]``
        (channels first) for a multi-channel file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be decoded, holds no samples, or holds non-finite samples.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: audio file not found")
    try:
        data, sample_rate = sf.read(path, dtype="float32", always_2d=True)  # [S, C]
    except (sf.SoundFileError, RuntimeError) as e:
        raise ValueError(f"{path}: cannot read audio with soundfile: {e}") from e
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise ValueError(f"{path}: audio file holds no samples (shape [S, C] = {list(data.shape)})")
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: audio file holds NaN or infinite samples")
    if data.shape[1] == 1:
        waveform = np.ascontiguousarray(data[:, 0])  # [S]
    else:
        waveform = np.ascontiguousarray(data.T)  # [C, S]
    logger.debug("read %s: %s samples at %d Hz", path, list(waveform.shape), sample_rate)
    return waveform, int(sample_rate)


def to_mono(waveform: Waveform) -> Waveform:
    """Average the channels of a ``[C, S]`` waveform; a ``[S]`` waveform is returned unchanged.

    Works on numpy arrays and torch tensors and returns the same type.
    """
    if waveform.ndim == 1:
        return waveform
    if waveform.ndim != 2:
        raise ValueError(f"to_mono: expected a waveform [S] or [C, S], got shape {list(waveform.shape)}")
    if isinstance(waveform, torch.Tensor):
        return waveform.mean(dim=0)  # [S]
    return waveform.mean(axis=0).astype(waveform.dtype, copy=False)  # [S]


def resample(waveform: Waveform, orig_sr: int, new_sr: int) -> Waveform:
    """Resample ``[..., S]`` from ``orig_sr`` to ``new_sr`` Hz with ``torchaudio.functional.resample``.

    Uses a windowed-sinc filter with the :data:`KAISER_BEST` settings (close to resampy's
    ``kaiser_best``, which VGGish's reference front end uses). Numpy input gives numpy output of
    the same dtype; tensor input gives a tensor. Equal rates return the input unchanged.
    """
    for name, rate in (("orig_sr", orig_sr), ("new_sr", new_sr)):
        if int(rate) != rate or rate <= 0:
            raise ValueError(f"resample: {name} must be a positive integer sample rate, got {rate!r}")
    orig_sr, new_sr = int(orig_sr), int(new_sr)
    if orig_sr == new_sr:
        return waveform
    is_numpy = isinstance(waveform, np.ndarray)
    x = torch.from_numpy(np.ascontiguousarray(waveform)) if is_numpy else waveform
    if not torch.is_floating_point(x):
        raise ValueError(f"resample: expected floating-point samples, got dtype {x.dtype}")
    y = AF.resample(x, orig_sr, new_sr, **KAISER_BEST)  # [..., ceil(S * new_sr / orig_sr)]
    if is_numpy:
        return y.numpy().astype(waveform.dtype, copy=False)
    return y
