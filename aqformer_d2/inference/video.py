"""A whole video through a clip segmenter: per-second frames and audio in, probabilities at the frame size out.

:class:`VideoInput` holds one video as AQFormer reads it: one frame per second (resized for the segmenter,
in its channel order) and the 16 kHz mono audio. :func:`load_video` makes one from a video file (any
container PyAV reads), :func:`load_frame_files` from image files (one per second) and an audio file.

:func:`predict_video` is the clip loop: plan the clips of T seconds (:func:`.clips.plan_clips`), build each
clip's frames ``[T, 3, S, S]`` and VGGish examples ``[T, 1, 96, 64]`` (the last clip padded), run the
segmenter, drop the padded frames and resize the probabilities back to the frame size. The demo
(demo/demo.py) and the main job's overlays (tools/run_demo_job.py) run videos through it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, List, Optional, Sequence

import numpy as np

from ..audio.video import load_audio_mono, probe_video, sample_frames_per_second
from .clips import ClipPlan, clip_audio, clip_frames, plan_clips, read_rgb, resize_frame, resize_probs
from .segmenter import ClipSegmenter

__all__ = ["MODEL_SAMPLE_RATE", "ClipPrediction", "VideoInput", "load_frame_files", "load_video", "predict_video"]

# Sample rate of the audio the VGGish front end reads.
MODEL_SAMPLE_RATE = 16000


@dataclass
class VideoInput:
    """One video, sampled at one frame per second.

    Attributes:
        frames: one uint8 ``[3, S, S]`` per second, resized for the segmenter, in its channel order.
        times: time (s) of each sampled frame in the video.
        waveform: float ``[N]`` mono audio at :data:`MODEL_SAMPLE_RATE`.
        height, width: the original frame size (the probabilities come back at it).
        fps: frame rate of the video (1 for image files).
        duration: seconds of video.
        num_video_frames: frames decoded (image files: their number).
        audio_path: the file the audio was read from; audio_origin: the video's start time when the audio
            is the video's own track (aligned with its frames), else None.
        frame_sampling: how the frames were chosen, in words.
        input_type: "video" or "frames".
        frame_files: the image files (input_type "frames"), else None.
        repeated_seconds: seconds with no frame of their own, which repeat the frame on screen.
    """

    frames: List[np.ndarray]
    times: List[float]
    waveform: np.ndarray
    height: int
    width: int
    fps: Fraction
    duration: float
    num_video_frames: int
    audio_path: str
    audio_origin: Optional[float]
    frame_sampling: str
    input_type: str
    frame_files: Optional[List[str]] = None
    repeated_seconds: Sequence[int] = ()

    @property
    def num_seconds(self) -> int:
        return len(self.frames)

    @property
    def audio_seconds(self) -> float:
        return self.waveform.shape[0] / MODEL_SAMPLE_RATE


@dataclass
class ClipPrediction:
    """Output of one clip: ``probs`` float32 ``[n, height, width]`` for the n = len(plan.seconds) real
    seconds of ``plan`` (padding dropped); ``num_audio_examples`` of its T VGGish examples came from the
    audio, the rest repeat the last one."""

    plan: ClipPlan
    probs: np.ndarray
    num_audio_examples: int


def _preprocess(segmenter: ClipSegmenter):
    """RGB uint8 ``[h, w, 3]`` -> uint8 ``[3, S, S]`` in the segmenter's size and channel order."""
    return lambda rgb: resize_frame(rgb, segmenter.height, segmenter.width, segmenter.input_format)


def load_frame_files(files: Sequence[str], audio_path: str, segmenter: ClipSegmenter) -> VideoInput:
    """Image files, one per second in the given order, and their audio file (WAV or any container with sound).

    Raises:
        ValueError: no files, a frame whose size differs from the first one's (both files named), or an
            unreadable image.
    """
    if not files:
        raise ValueError(f"no frame files given (audio {audio_path})")
    preprocess = _preprocess(segmenter)
    frames, height, width = [], None, None
    for path in files:
        rgb = read_rgb(path)  # [h, w, 3]
        if height is None:
            height, width = rgb.shape[:2]
        elif rgb.shape[:2] != (height, width):
            raise ValueError(
                f"{path}: frame size {rgb.shape[1]}x{rgb.shape[0]} differs from the first frame's "
                f"{width}x{height} ({files[0]})"
            )
        frames.append(preprocess(rgb))
    return VideoInput(
        frames=frames,
        times=[float(s) for s in range(len(files))],
        waveform=load_audio_mono(audio_path, MODEL_SAMPLE_RATE),
        height=height,
        width=width,
        fps=Fraction(1),
        duration=float(len(files)),
        num_video_frames=len(files),
        audio_path=audio_path,
        audio_origin=None,
        frame_sampling="every image is one second, in the order given (a folder: natural file-name order)",
        input_type="frames",
        frame_files=list(files),
    )


def load_video(path: str, segmenter: ClipSegmenter, frame_position: str = "last",
               audio_path: Optional[str] = None) -> VideoInput:
    """A video file: the ``frame_position`` frame ("first", "middle" or "last", as AVSBench) of each second,
    and the video's own sound track aligned with its frames, or ``audio_path`` instead.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the video has no audio stream and no ``audio_path`` is given.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: input video not found")
    info = probe_video(path)
    if audio_path is None and not info.has_audio:
        raise ValueError(f"{path}: the video has no audio stream; AQFormer needs sound (give an audio file)")
    sampled = sample_frames_per_second(path, frame_position, transform=_preprocess(segmenter))
    origin = info.start_time if audio_path is None else None
    audio_path = path if audio_path is None else audio_path
    duration = info.duration if info.duration > 0 else sampled.last_time + 1.0 / float(info.fps)
    return VideoInput(
        frames=sampled.frames,
        times=[round(t, 6) for t in sampled.times],
        waveform=load_audio_mono(audio_path, MODEL_SAMPLE_RATE, origin=origin),
        height=sampled.height,
        width=sampled.width,
        fps=info.fps,
        duration=duration,
        num_video_frames=sampled.num_decoded,
        audio_path=audio_path,
        audio_origin=origin,
        frame_sampling=f"one frame per second: the {frame_position} frame whose time falls in [s, s + 1)",
        input_type="video",
        repeated_seconds=list(sampled.repeated_seconds),
    )


def predict_video(segmenter: ClipSegmenter, video: VideoInput) -> Iterator[ClipPrediction]:
    """Sound probabilities of every sampled second of ``video``, clip by clip (clips of the segmenter's T
    seconds; the last one padded by repeating its last frame and audio example, the padding's output dropped).

    Yields one :class:`ClipPrediction` per clip of ``plan_clips(video.num_seconds, segmenter.num_frames)``,
    its probabilities resized (bilinear) from the segmenter's size to ``video.height`` x ``video.width``.
    """
    for plan in plan_clips(video.num_seconds, segmenter.num_frames):
        images = clip_frames(video.frames, plan)  # [T, 3, S, S] uint8
        audio, num_examples = clip_audio(video.waveform, MODEL_SAMPLE_RATE, plan)  # [T, 1, 96, 64]
        probs = segmenter(images, audio)  # [T, S, S]
        probs = resize_probs(probs[: len(plan.seconds)], video.height, video.width)  # [n, height, width]
        yield ClipPrediction(plan=plan, probs=probs, num_audio_examples=num_examples)

