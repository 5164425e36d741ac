"""Video container I/O with PyAV: probing, one frame per second, overlay encoding (H.264 + AAC).

This module sits below ``aqformer_d2.modeling`` and ``aqformer_d2.data`` and imports neither.

Timeline: every time in this module is relative to the start of the video stream (its ``start_time``;
the first frame is at t = 0 for ordinary files). Second ``s`` covers ``[s, s + 1)``. AVSBench samples
one frame per second; which frame of a second is taken is the ``position`` argument of
:func:`sample_frames_per_second`: ``"last"`` (default: the last frame whose time falls in that second; AVSBench
annotates the last frame of each one-second clip), ``"first"`` (the first frame whose time falls in
that second) or ``"middle"`` (the frame of that second closest to s + 0.5).

The audio track (decoding, alignment to this timeline, 16 kHz mono) is read by
:mod:`aqformer_d2.audio.audio_track`; its functions are re-exported here. :func:`write_video` encodes
frames and an audio track into an MP4 file.
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

from .audio_track import PathLike, decode_audio, iter_audio_chunks, load_audio_mono, open_container, stream_start

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


def _video_stream(container, path: str):
    if not container.streams.video:
        raise ValueError(f"{path}: no video stream in the container")
    return container.streams.video[0]


def probe_video(path: PathLike) -> VideoInfo:
    """Read the size, frame rate, duration and audio properties of a video file (headers only).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a media container, or no video stream (the message names the file).
    """
    path = os.fspath(path)
    with open_container(path, "video") as container:
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
            start_time=stream_start(vs),
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
    start = stream_start(vs)
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

    with open_container(path, "video") as container:
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
    with open_container(path, "video") as container:
        for t, frame in _decode_video(path, container):
            yield t, frame.to_ndarray(format="rgb24")



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
