"""The audio track of a media container, decoded with PyAV onto a video's timeline.

Times are in seconds; ``origin`` (the video stream's start for a video's own sound) becomes t = 0.
Audio of any container (MP4/AAC, WAV, FLAC, ...) is decoded to float samples, aligned to that timeline
(silence in front when the audio starts late, samples dropped when it starts early) and, for the model,
downmixed by averaging the channels and resampled to 16 kHz with :func:`aqformer_d2.audio.io.resample`
(the VGGish front end's conventions). The shared container helpers (:func:`open_container`,
:func:`stream_start`) live here too; :mod:`aqformer_d2.audio.video` reads frames and writes MP4 files.

This module sits below ``aqformer_d2.modeling`` and ``aqformer_d2.data`` and imports neither.
"""
from __future__ import annotations

import os
from typing import Iterator, Optional, Tuple, Union

import av
import numpy as np

from .io import resample, to_mono

__all__ = ["PathLike", "open_container", "stream_start", "iter_audio_chunks", "decode_audio", "load_audio_mono"]

PathLike = Union[str, os.PathLike]


def open_container(path: PathLike, what: str) -> av.container.InputContainer:
    """Open a media file with PyAV; errors name the file (``what``: "video" / "audio" for the message)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: {what} file not found")
    try:
        return av.open(path)
    except av.error.FFmpegError as e:
        raise ValueError(f"{path}: cannot open as a media container with PyAV: {e}") from e


def stream_start(stream) -> float:
    """Start time (s) of a PyAV stream in its file's timeline; 0.0 when the container gives none."""
    if stream.start_time is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _layout_name(name: str, channels: int) -> str:
    """A layout name PyAV accepts: the stream's own, else FFmpeg's default layout for the channel count."""
    try:
        av.AudioLayout(name)
        return name
    except ValueError:
        return f"{channels}c"


def _audio_params(path: str) -> Tuple[int, str, Optional[float]]:
    """(sample rate, layout name, stream start in s) of the first audio stream; errors name the file."""
    with open_container(path, "audio") as container:
        if not container.streams.audio:
            raise ValueError(f"{path}: no audio stream in the container")
        stream = container.streams.audio[0]
        cc = stream.codec_context
        rate = int(cc.sample_rate or 0)
        if rate <= 0:
            raise ValueError(f"{path}: audio stream has no sample rate")
        return rate, _layout_name(cc.layout.name, int(cc.channels)), stream_start(stream)


def _audio_chunks(path: str, rate: int, start: float) -> Iterator[np.ndarray]:
    """Float32 ``[C, n]`` chunks of the first audio stream, ``start`` (s) being t = 0 of the output."""
    with open_container(path, "audio") as container:
        stream = container.streams.audio[0]
        to_float = av.AudioResampler(format="fltp", layout=stream.codec_context.layout, rate=rate)
        to_drop = None  # samples still to drop before the origin; None before the first chunk

        def aligned(f, t0: float) -> Iterator[np.ndarray]:
            nonlocal to_drop
            data = f.to_ndarray().astype(np.float32, copy=False)  # [C, n] planar float
            if to_drop is None:
                offset = int(round((t0 - start) * rate))
                if offset > 0:  # audio starts after the origin: silence in front
                    yield np.zeros((data.shape[0], offset), np.float32)
                to_drop = max(-offset, 0)  # audio starts before the origin: drop what precedes it
            if to_drop:
                cut = min(to_drop, data.shape[1])
                data, to_drop = data[:, cut:], to_drop - cut
            if data.shape[1]:
                yield data

        try:
            t0 = start
            for frame in container.decode(stream):
                if to_drop is None and frame.time is not None:
                    t0 = float(frame.time)
                for f in to_float.resample(frame):
                    yield from aligned(f, t0)
            for f in to_float.resample(None):
                yield from aligned(f, t0)
        except av.error.FFmpegError as e:
            raise ValueError(f"{path}: audio decoding failed: {e}") from e


def iter_audio_chunks(
    path: PathLike, origin: Optional[float] = None
) -> Tuple[int, str, Iterator[np.ndarray]]:
    """Decode the first audio stream of a file as float32 chunks ``[C, n]`` on a given timeline.

    Args:
        path: any container PyAV reads (video with sound, WAV, FLAC, MP3, ...).
        origin: time (s, in the file's own timeline) that becomes t = 0: the video stream's start for
            the sound track of a video. None: the audio stream's own start (a separate audio file).
            Audio starting after the origin is preceded by silence; audio before it is dropped.

    Returns:
        ``(sample_rate, layout name, iterator of chunks)``. The stream is checked now; the file is
        decoded (and kept open) while the iterator runs.

    Raises:
        FileNotFoundError / ValueError naming the file: unreadable file, or no audio stream.
    """
    path = os.fspath(path)
    rate, layout, start = _audio_params(path)
    if origin is not None:
        start = float(origin)
    return rate, layout, _audio_chunks(path, rate, start)


def decode_audio(path: PathLike, origin: Optional[float] = None, mono: bool = False) -> Tuple[np.ndarray, int]:
    """Decode a whole audio stream: ``(waveform, sample_rate)``.

    waveform is float32 ``[C, S]`` (channels first), or ``[S]`` with ``mono=True`` (channel mean,
    computed chunk by chunk). See :func:`iter_audio_chunks` for ``origin``.

    Raises:
        ValueError naming the file: no audio stream, or no samples.
    """
    rate, _, chunks = iter_audio_chunks(path, origin)
    parts = [to_mono(c) if mono else c for c in chunks]
    if not parts:
        raise ValueError(f"{os.fspath(path)}: the audio stream holds no samples")
    waveform = np.concatenate(parts, axis=-1)
    if waveform.shape[-1] == 0:
        raise ValueError(f"{os.fspath(path)}: the audio stream holds no samples")
    if not np.isfinite(waveform).all():
        raise ValueError(f"{os.fspath(path)}: the audio stream holds NaN or infinite samples")
    return waveform, rate


def load_audio_mono(
    path: PathLike, sample_rate: int = 16000, origin: Optional[float] = None
) -> np.ndarray:
    """Audio of a file as mono float32 ``[S]`` at ``sample_rate`` (16 kHz: the VGGish front end's rate).

    Channels are averaged (as VGGish does), then resampled with :func:`aqformer_d2.audio.io.resample`.
    """
    waveform, rate = decode_audio(path, origin=origin, mono=True)
    return resample(waveform, rate, sample_rate)
