"""A whole video through a clip segmenter: per-second frames and audio in, probabilities at the frame size out.

:class:`VideoInput` holds one video as AQFormer reads it: one frame per second (resized for the segmenter,
in its channel order) and the 16 kHz mono audio. :func:`load_video` makes one from a video file (any
container PyAV reads), :func:`load_frame_files` from image files (one per second) and an audio file.

:func:`predict_video` is the clip loop: plan the clips of T seconds (:func:`.clips.plan_clips`), build each
clip's frames ``[T, 3, S, S]`` and VGGish examples ``[T, 1, 96, 64]`` (the last clip padded), run the
segmenter, drop the padded frames and bring the output back to the frame size as per-pixel labels (and
probabilities for S4 / MS3 models; :mod:`.outputs`). The demo (demo/demo.py) and the main job's overlays
(tools/run_demo_job.py) run videos through it. :func:`muted` replaces a video's soundtrack by silence.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, List, Optional, Sequence

import numpy as np

from ..audio.negatives import silence
from ..audio.video import load_audio_mono, probe_video, sample_frames_per_second
from .clips import ClipPlan, clip_audio, clip_frames, plan_clips, read_rgb, resize_frame
from .segmenter import ClipSegmenter

__all__ = [
    "MODEL_SAMPLE_RATE",
    "ClipPrediction",
    "VideoInput",
    "load_frame_files",
    "load_video",
    "muted",
    "predict_video",
]

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
        audio_muted: the waveform is silence of the soundtrack's length (:func:`muted`), not ``audio_path``'s sound.
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
    audio_muted: bool = False

    @property
    def num_seconds(self) -> int:
        return len(self.frames)

    @property
    def audio_seconds(self) -> float:
        return self.waveform.shape[0] / MODEL_SAMPLE_RATE


@dataclass
class ClipPrediction:
    """Output of one clip for the n = len(plan.seconds) real seconds of ``plan`` (padding dropped), at the
    frame size: ``labels`` uint8 ``[n, height, width]`` (class per pixel, 0 = background: no sounding object)
    and ``probs`` float32 ``[n, height, width]`` (sound probabilities; None for AVSS models, whose labels are
    the argmax of class scores). ``num_audio_examples`` of its T VGGish examples came from the audio, the rest
    repeat the last one."""

    plan: ClipPlan
    probs: Optional[np.ndarray]
    num_audio_examples: int
    labels: Optional[np.ndarray] = None

    def sounding(self) -> np.ndarray:
        """bool ``[n]``: the frame has at least one pixel of a sounding object (a label other than background)."""
        return self.labels.reshape(self.labels.shape[0], -1).any(axis=1)


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


def muted(video: VideoInput) -> VideoInput:
    """``video`` with its soundtrack replaced by silence of the same length (zeros, which the clip loop sends
    through the real log-mel front end, as :mod:`aqformer_d2.audio.negatives` defines the silence negative)."""
    waveform = silence(video.waveform.shape[-1]).astype(video.waveform.dtype, copy=False)  # [N]
    return dataclasses.replace(video, waveform=waveform, audio_muted=True)


def predict_video(segmenter: ClipSegmenter, video: VideoInput, mask_threshold: float = 0.5) -> Iterator[ClipPrediction]:
    """Predictions for every sampled second of ``video``, clip by clip (clips of the segmenter's T seconds;
    the last one padded by repeating its last frame and audio example, the padding's output dropped).

    Yields one :class:`ClipPrediction` per clip of ``plan_clips(video.num_seconds, segmenter.num_frames)``:
    the segmenter's output resized (bilinear) from its size to ``video.height`` x ``video.width`` and turned
    into labels by ``segmenter.output`` (sound probabilities: ``probs > mask_threshold``, the model's
    MODEL.AQFORMER.MASK_THRESHOLD; class scores: argmax, ``mask_threshold`` unused).
    """
    for plan in plan_clips(video.num_seconds, segmenter.num_frames):
        images = clip_frames(video.frames, plan)  # [T, 3, S, S] uint8
        audio, num_examples = clip_audio(video.waveform, MODEL_SAMPLE_RATE, plan)  # [T, 1, 96, 64]
        out = segmenter(images, audio)  # [T, S, S] or [T, K, S, S]
        probs, labels = segmenter.output.to_frames(out[: len(plan.seconds)], video.height, video.width,
                                                   mask_threshold)  # [n, height, width]
        yield ClipPrediction(plan=plan, probs=probs, num_audio_examples=num_examples, labels=labels)

