"""Video and audio container I/O with PyAV: one frame per second, 16 kHz mono audio, overlay encoding.

This module sits below ``aqformer_d2.modeling`` and ``aqformer_d2.data`` and imports neither.

Timeline: every time in this module is relative to the start of the video stream (its ``start_time``;
the first frame is at t = 0 for ordinary files). Second ``s`` covers ``[s, s + 1)``. AVSBench samples
one frame per second; which frame of a second is taken is the ``position`` argument of
:func:`sample_frames_per_second`: ``"last"`` (default: the last frame whose time falls in that second; AVSBench
annotates the last frame of each one-second clip), ``"first"`` (the first frame whose time falls in
that second) or ``"middle"`` (the frame of that second closest to s + 0.5).

Audio of any container (MP4/AAC, WAV, FLAC, ...) is decoded with PyAV, converted to float samples,
aligned to the video timeline (silence in front when the audio starts late, samples dropped when it
starts early) and, for the model, downmixed by averaging the channels and resampled to 16 kHz with
:func:`aqformer_d2.audio.io.resample` (the VGGish front end's conventions).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Iterable, Iterator, List, Optional, Tuple, Union

import av
import numpy as np

from .io import resample, to_mono

__all__ = [
    "FRAME_POSITIONS",
    "VideoInfo",
    "SampledFrames",
    "probe_video",
    "sample_frames_per_second",
    "iter_video_frames",
    "iter_audio_chunks",
    "decode_audio",
    "load_audio_mono",
    "write_video",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

# Which frame of each second :func:`sample_frames_per_second` keeps.
FRAME_POSITIONS = ("last", "first", "middle")
# Frame times within this many seconds of a whole second count as that second (rounding of pts).
_TIME_EPS = 1e-6
# Channel layouts FFmpeg's native AAC encoder accepts; anything else is downmixed to stereo for writing.
_AAC_LAYOUTS = ("mono", "stereo", "3.0", "4.0", "5.0", "5.1", "6.1", "7.1", "5.0(side)", "5.1(side)", "7.1(wide)")


@dataclass
class VideoInfo:
    """What :func:`probe_video` reads from a container's headers.

    ``fps`` is the video stream's average frame rate (a Fraction); ``duration`` in seconds (container
    duration when the stream has none; 0.0 when neither is known). ``audio_*`` are None without audio.
    """

    path: str
    width: int
    height: int
    fps: Fraction
    duration: float
    start_time: float
    num_frames: int
    audio_sample_rate: Optional[int] = None
    audio_channels: Optional[int] = None
    audio_layout: Optional[str] = None
    audio_codec: Optional[str] = None

    @property
    def has_audio(self) -> bool:
        return self.audio_sample_rate is not None


@dataclass
class SampledFrames:
    """Result of :func:`sample_frames_per_second`.

    ``frames[s]`` is the (transformed) frame of second ``s``, taken at ``times[s]`` seconds.
    ``num_decoded`` counts all decoded frames; ``last_time`` is the time of the last one.
    """

    frames: list
    times: List[float]
    num_decoded: int
    last_time: float
    width: int
    height: int
    position: str
    repeated_seconds: List[int] = field(default_factory=list)

    @property
    def num_seconds(self) -> int:
        return len(self.frames)


def _open(path: PathLike, what: str) -> av.container.InputContainer:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: {what} file not found")
    try:
        return av.open(path)
    except av.error.FFmpegError as e:
        raise ValueError(f"{path}: cannot open as a media container with PyAV: {e}") from e


def _video_stream(container, path: str):
    if not container.streams.video:
        raise ValueError(f"{path}: no video stream in the container")
    return container.streams.video[0]


def _stream_start(stream) -> float:
    if stream.start_time is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def probe_video(path: PathLike) -> VideoInfo:
    """Read the size, frame rate, duration and audio properties of a video file (headers only).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a media container, or no video stream (the message names the file).
    """
    path = os.fspath(path)
    with _open(path, "video") as container:
        vs = _video_stream(container, path)
        cc = vs.codec_context
        if not cc.width or not cc.height:
            raise ValueError(f"{path}: video stream has no frame size ({cc.width}x{cc.height})")
        fps = vs.average_rate or vs.guessed_rate or vs.base_rate
        if not fps:
            raise ValueError(f"{path}: video stream has no frame rate")
        if vs.duration is not None:
            duration = float(vs.duration * vs.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        info = VideoInfo(
            path=path,
            width=int(cc.width),
            height=int(cc.height),
            fps=Fraction(fps),
            duration=duration,
            start_time=_stream_start(vs),
            num_frames=int(vs.frames or 0),
        )
        if container.streams.audio:
            a = container.streams.audio[0]
            info.audio_sample_rate = int(a.codec_context.sample_rate)
            info.audio_channels = int(a.codec_context.channels)
            info.audio_layout = a.codec_context.layout.name
            info.audio_codec = a.codec_context.name
    return info


def _decode_video(path: str, container) -> Iterator[Tuple[float, "av.VideoFrame"]]:
    """(time relative to the stream start, frame) of every decoded video frame, in decoding order."""
    vs = _video_stream(container, path)
    vs.thread_type = "AUTO"  # frame + slice threading in FFmpeg's decoder
    start = _stream_start(vs)
    last = -math.inf
    try:
        for frame in container.decode(vs):
            t = frame.time
            # A frame without a timestamp follows the previous one (1 / rate later).
            if t is None:
                t = last + 1.0 / float(vs.average_rate or 25) if last > -math.inf else start
            last = t
            yield t - start, frame
    except av.error.FFmpegError as e:
        raise ValueError(f"{path}: video decoding failed: {e}") from e


def sample_frames_per_second(
    path: PathLike,
    position: str = "last",
    transform: Optional[Callable[[np.ndarray], object]] = None,
) -> SampledFrames:
    """Decode a video and keep one frame per second.

    Args:
        path: any container PyAV reads.
        position: which frame of second s (frames with time in ``[s, s + 1)``) is kept: "last",
            "first" or "middle" (closest to s + 0.5); see the module docstring.
        transform: applied to the RGB uint8 ``[H, W, 3]`` array of each kept frame (e.g. a resize to
            the model's input size, so full-size frames are never stored); identity by default.

    Returns:
        :class:`SampledFrames` with one entry per second from 0 to the second of the last frame. A
        second without any frame (a gap in a variable-frame-rate video) repeats the frame on screen
        at that time, and is listed in ``repeated_seconds``.

    Raises:
        FileNotFoundError / ValueError naming the file: unreadable file, no video stream, no frames.
    """
    if position not in FRAME_POSITIONS:
        raise ValueError(f"position must be one of {FRAME_POSITIONS}, got {position!r}")
    path = os.fspath(path)
    if transform is None:
        transform = _identity
    frames: list = []
    times: List[float] = []
    repeated: List[int] = []
    # Candidate of the current second: (time, av frame, distance score).
    current_sec = None
    cand = None
    prev = None  # (time, frame) of the previous decoded frame
    n = 0
    width = height = 0

    def commit(upto_sec: int, cand_item, on_screen) -> None:
        """Store the candidate of ``current_sec``, then fill seconds up to ``upto_sec`` (exclusive)."""
        t, fr = cand_item
        frames.append(transform(fr.to_ndarray(format="rgb24")))
        times.append(t)
        for s in range(current_sec + 1, upto_sec):
            frames.append(transform(on_screen[1].to_ndarray(format="rgb24")))
            times.append(on_screen[0])
            repeated.append(s)

    with _open(path, "video") as container:
        for t, frame in _decode_video(path, container):
            n += 1
            width, height = frame.width, frame.height
            sec = max(0, int(math.floor(t + _TIME_EPS)))
            if current_sec is None:
                # Seconds before the first frame (a stream whose first frame is late) show that frame.
                for s in range(sec):
                    frames.append(transform(frame.to_ndarray(format="rgb24")))
                    times.append(t)
                    repeated.append(s)
                current_sec, cand = sec, (t, frame)
            elif sec > current_sec:
                commit(sec, cand, prev)
                current_sec, cand = sec, (t, frame)
            elif position == "last" or (
                position == "middle" and abs(t - (sec + 0.5)) < abs(cand[0] - (sec + 0.5))
            ):
                cand = (t, frame)
            prev = (t, frame)
        if current_sec is None:
            raise ValueError(f"{path}: the video stream holds no decodable frame")
        commit(current_sec + 1, cand, prev)
    return SampledFrames(
        frames=frames,
        times=times,
        num_decoded=n,
        last_time=prev[0],
        width=width,
        height=height,
        position=position,
        repeated_seconds=repeated,
    )


def _identity(x):
    return x


def iter_video_frames(path: PathLike) -> Iterator[Tuple[float, np.ndarray]]:
    """Yield ``(time in s from the stream start, RGB uint8 [H, W, 3])`` for every frame of a video."""
    path = os.fspath(path)
    with _open(path, "video") as container:
        for t, frame in _decode_video(path, container):
            yield t, frame.to_ndarray(format="rgb24")


def _layout_name(name: str, channels: int) -> str:
    """A layout name PyAV accepts: the stream's own, else FFmpeg's default layout for the channel count."""
    try:
        av.AudioLayout(name)
        return name
    except ValueError:
        return f"{channels}c"


def _audio_params(path: str) -> Tuple[int, str, Optional[float]]:
    """(sample rate, layout name, stream start in s) of the first audio stream; errors name the file."""
    with _open(path, "audio") as container:
        if not container.streams.audio:
            raise ValueError(f"{path}: no audio stream in the container")
        stream = container.streams.audio[0]
        cc = stream.codec_context
        rate = int(cc.sample_rate or 0)
        if rate <= 0:
            raise ValueError(f"{path}: audio stream has no sample rate")
        return rate, _layout_name(cc.layout.name, int(cc.channels)), _stream_start(stream)


def _audio_chunks(path: str, rate: int, start: float) -> Iterator[np.ndarray]:
    """Float32 ``[C, n]`` chunks of the first audio stream, ``start`` (s) being t = 0 of the output."""
    with _open(path, "audio") as container:
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


def _aac_settings(rate: int, layout: str) -> Tuple[int, str]:
    """Sample rate and layout the AAC encoder gets for a source of the given rate / layout."""
    rates = av.Codec("aac", "w").audio_rates or ()
    out_rate = rate if (not rates or rate in rates) else min(rates, key=lambda r: (abs(r - rate), -r))
    out_layout = layout if layout in _AAC_LAYOUTS else "stereo"
    return out_rate, out_layout


def write_video(
    out_path: PathLike,
    frames: Iterable[np.ndarray],
    width: int,
    height: int,
    fps: Union[Fraction, int, float],
    audio_path: Optional[PathLike] = None,
    audio_origin: Optional[float] = None,
    crf: int = 23,
    preset: str = "veryfast",
) -> dict:
    """Encode RGB frames as H.264 (libx264) and, optionally, an audio track as AAC into an MP4 file.

    Args:
        out_path: the .mp4 file to write.
        frames: RGB uint8 ``[height, width, 3]`` arrays, shown at a constant ``fps``.
        width, height: frame size. Even sizes use yuv420p; an odd size uses yuv444p (4:2:0 needs even
            sizes) so the frame size is kept exactly.
        fps: frame rate of the output.
        audio_path: file whose first audio stream is re-encoded as AAC (None: no audio). The sample rate
            and channel layout are kept where AAC supports them (otherwise nearest rate / stereo).
        audio_origin: see :func:`iter_audio_chunks` (the video stream's start for a video's own track).
        crf, preset: libx264 quality settings.

    Returns:
        ``{"num_frames", "pix_fmt", "audio": None or {"sample_rate", "layout", "num_samples"}}``.

    Raises:
        ValueError: a frame of the wrong shape / dtype, no frames, or an unreadable audio file.
    """
    out_path = os.fspath(out_path)
    fps = Fraction(fps).limit_denominator(1 << 16)
    if fps <= 0:
        raise ValueError(f"{out_path}: frame rate must be positive, got {fps}")
    audio = None
    if audio_path is not None:
        # Open the audio first, so a bad audio file fails before anything is written.
        src_rate, src_layout, chunks = iter_audio_chunks(audio_path, audio_origin)
        out_rate, out_layout = _aac_settings(src_rate, src_layout)
        if out_layout != src_layout:
            logger.warning("%s: AAC cannot keep channel layout %r; writing %r", audio_path, src_layout, out_layout)
        audio = (src_rate, src_layout, chunks, out_rate, out_layout)
    pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    info = {"num_frames": 0, "pix_fmt": pix_fmt, "audio": None}
    with av.open(out_path, "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = int(width), int(height), pix_fmt
        vs.options = {"crf": str(crf), "preset": preset}
        if audio is not None:
            astream = out.add_stream("aac", rate=audio[3], layout=audio[4])
        for i, rgb in enumerate(frames):
            if rgb.dtype != np.uint8 or rgb.shape != (height, width, 3):
                raise ValueError(
                    f"{out_path}: frame {i} has shape {list(rgb.shape)} / dtype {rgb.dtype}, "
                    f"expected [{height}, {width}, 3] uint8"
                )
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            out.mux(vs.encode(vf))
            info["num_frames"] += 1
        if info["num_frames"] == 0:
            raise ValueError(f"{out_path}: no frames to write")
        out.mux(vs.encode(None))
        if audio is not None:
            src_rate, src_layout, chunks, out_rate, out_layout = audio
            frame_size = astream.codec_context.frame_size or 1024
            to_aac = av.AudioResampler(format="fltp", layout=out_layout, rate=out_rate, frame_size=frame_size)
            written = 0
            for chunk in chunks:
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout=src_layout)
                af.sample_rate = src_rate
                af.pts = None
                for f in to_aac.resample(af):
                    f.pts = None
                    written += f.samples
                    out.mux(astream.encode(f))
            for f in to_aac.resample(None):
                f.pts = None
                written += f.samples
                out.mux(astream.encode(f))
            out.mux(astream.encode(None))
            info["audio"] = {"sample_rate": out_rate, "layout": out_layout, "num_samples": written}
    return info
