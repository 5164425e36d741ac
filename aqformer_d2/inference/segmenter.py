"""Clip segmenters: one interface, two backends (PyTorch eager and ONNX Runtime).

A :class:`ClipSegmenter` maps one clip, uint8 frames ``[T, 3, H, W]`` (channel order ``input_format``) and
float VGGish log-mel examples ``[T, 1, 96, 64]``, to float32 numpy outputs whose kind is its ``output``
(:mod:`.outputs`): sound probabilities ``[T, H, W]`` (S4 / MS3 models), or per-class scores ``[T, K, H, W]``
(AVSS models, PyTorch backend only).
T, H and W are fixed per segmenter; a clip of another shape is refused with an error naming the model
source and both shapes. The demo and the benchmarks use this interface; clip planning and resizing live
in :mod:`.clips`.

* :class:`TorchSegmenter` runs :class:`~.clip_module.ClipSegmentationModule` eagerly (``torch.inference_mode``).
* :class:`OnnxRuntimeSegmenter` runs a file written by :func:`~.onnx_export.export_clip_onnx` with
  ``onnxruntime`` on the CPU; T, H, W and the channel order come from the file's metadata.

:func:`build_segmenter` builds either from a config, checking the ONNX file against the config.
"""
from __future__ import annotations

import abc
import logging
import os
from typing import Optional, Union

import numpy as np
import torch
from detectron2.config import configurable

from ..checkpoint import AQCheckpointer
from ..modeling import build_aq_model
from detectron2.modeling import META_ARCH_REGISTRY

from .clip_module import clip_module_class
from .clips import INPUT_FORMATS, ClipInputShapes
from .onnx_export import parse_clip_metadata
from .outputs import ClipOutput, SoundProbabilities

__all__ = [
    "BACKENDS",
    "ClipSegmenter",
    "TorchSegmenter",
    "OnnxRuntimeSegmenter",
    "build_inference_model",
    "build_segmenter",
]

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime")
ArrayLike = Union[np.ndarray, torch.Tensor]


def _shape(x: ArrayLike) -> list:
    return list(x.shape)


def _dtype_name(x: ArrayLike) -> str:
    return str(x.dtype).replace("torch.", "")


class ClipSegmenter(ClipInputShapes, abc.ABC):
    """Sound probabilities of clips of a fixed shape.

    Args:
        num_frames: T.
        height, width: H, W of the frames (already resized).
        input_format: channel order of the frames, "RGB" or "BGR".
        source: what the model came from (a config / weights, or an ONNX file), used in error messages.
        output: what the segmenter returns (default: sound probabilities ``[T, H, W]``).
    """

    backend = ""

    def __init__(self, *, num_frames: int, height: int, width: int, input_format: str, source: str,
                 output: Optional[ClipOutput] = None):
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"{source}: input format {input_format!r}; supported: {INPUT_FORMATS}")
        self.num_frames = int(num_frames)
        self.height = int(height)
        self.width = int(width)
        self.input_format = input_format
        self.source = source
        self.output = output if output is not None else SoundProbabilities()

    def check_clip(self, frames: ArrayLike, audio: ArrayLike) -> None:
        """Refuse a clip this segmenter was not built for: the error names the source and both shapes."""
        if tuple(frames.shape) != self.frames_shape or tuple(audio.shape) != self.audio_shape:
            raise ValueError(
                f"{self.source}: this model takes clips of T={self.num_frames} frames of {self.height}x{self.width}, "
                f"frames {list(self.frames_shape)} and audio {list(self.audio_shape)}; got frames {_shape(frames)} "
                f"and audio {_shape(audio)}"
            )
        if _dtype_name(frames) != "uint8":
            raise ValueError(f"{self.source}: frames must be uint8, got {_dtype_name(frames)}")

    def __call__(self, frames: ArrayLike, audio: ArrayLike) -> np.ndarray:
        """frames uint8 ``[T, 3, H, W]``, audio float ``[T, 1, 96, 64]`` -> float32 of shape
        ``self.output.output_shape(T, H, W)``: ``[T, H, W]`` probabilities or ``[T, K, H, W]`` class scores."""
        self.check_clip(frames, audio)
        return self._run(frames, audio)

    @abc.abstractmethod
    def _run(self, frames: ArrayLike, audio: ArrayLike) -> np.ndarray:
        """The backend's forward pass on a checked clip."""


def build_inference_model(cfg) -> torch.nn.Module:
    """The meta-architecture of ``cfg`` in eval mode on ``cfg.MODEL.DEVICE`` with ``cfg.MODEL.WEIGHTS`` loaded
    (an empty value keeps the random initialisation, logged as a warning).

    Raises:
        FileNotFoundError: MODEL.WEIGHTS is a local path that does not exist.
    """
    model = build_aq_model(cfg)
    model.eval()
    weights = cfg.MODEL.WEIGHTS
    if weights:
        if "://" not in weights and not os.path.isfile(weights):
            raise FileNotFoundError(f"{weights}: MODEL.WEIGHTS file not found")
        AQCheckpointer(model).load(weights)
    else:
        logger.warning("MODEL.WEIGHTS is empty: the model keeps its random initialisation")
    return model


class TorchSegmenter(ClipSegmenter):
    """PyTorch eager backend: the model's clip module (:func:`~.clip_module.clip_module_class`; for S4 / MS3
    models the module the ONNX export traces).

    Args:
        model: an AQFormer meta-architecture (put in eval mode): ``AQFormer`` (probabilities) or
            ``AQFormerSemantic`` (class scores), or a subclass of either.
        height, width: frame size.
        input_format: channel order of the frames the model was trained on.
        source: description for error messages (default: "PyTorch model").
    """

    backend = "torch"

    @configurable
    def __init__(self, *, model: torch.nn.Module, height: int, width: int, input_format: str,
                 source: str = "PyTorch model"):
        module = clip_module_class(type(model))(model, model.num_frames, height, width)
        super().__init__(num_frames=model.num_frames, height=height, width=width, input_format=input_format,
                         source=source, output=module.clip_output())
        self.module = module
        self.device = model.device

    @classmethod
    def from_config(cls, cfg):
        size = int(cfg.INPUT.IMAGE_SIZE)
        return {
            "model": build_inference_model(cfg),
            "height": size,
            "width": size,
            "input_format": cfg.INPUT.FORMAT,
            "source": f"PyTorch model (MODEL.WEIGHTS {cfg.MODEL.WEIGHTS or 'empty'})",
        }

    @property
    def model(self) -> torch.nn.Module:
        return self.module.model

    def _run(self, frames: ArrayLike, audio: ArrayLike) -> np.ndarray:
        frames = torch.as_tensor(frames).to(self.device)  # [T, 3, H, W] uint8
        audio = torch.as_tensor(audio).to(self.device)  # [T, 1, 96, 64]
        with torch.inference_mode():
            out = self.module(frames, audio)  # [T, H, W] or [T, K, H, W]
        return out.float().cpu().numpy()


class OnnxRuntimeSegmenter(ClipSegmenter):
    """ONNX Runtime backend (CPU) for a file written by :func:`~.onnx_export.export_clip_onnx`.

    Args:
        path: the ONNX file.
        num_threads: ONNX Runtime's intra-op threads (None: its default, one per physical core).
        enable_profiling: write ONNX Runtime's JSON profile (see :meth:`end_profiling`).
        profile_prefix: path prefix of that profile file.
    """

    backend = "onnxruntime"

    def __init__(self, path: str, *, num_threads: Optional[int] = None, enable_profiling: bool = False,
                 profile_prefix: str = "onnxruntime_profile"):
        import onnxruntime as ort
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: ONNX model file not found")
        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        if enable_profiling:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        load_errors = (ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.InvalidProtobuf,
                       ort_errors.InvalidGraph, ort_errors.NotImplemented, ort_errors.RuntimeException)
        try:
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except load_errors as e:
            raise ValueError(f"{path}: onnxruntime cannot load the model: {e}") from e
        meta = parse_clip_metadata(session.get_modelmeta().custom_metadata_map, path)
        super().__init__(num_frames=meta["num_frames"], height=meta["height"], width=meta["width"],
                         input_format=meta["input_format"], source=path)
        self.path = path
        self.metadata = meta
        self.session = session
        self._check_graph_shapes()

    def _check_graph_shapes(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        expected = {"frames": (list(self.frames_shape), "tensor(uint8)"), "audio": (list(self.audio_shape), "tensor(float)")}
        for name, (shape, dtype) in expected.items():
            if name not in inputs:
                raise ValueError(f"{self.path}: the graph has no input {name!r} (inputs: {sorted(inputs)})")
            if list(inputs[name].shape) != shape or inputs[name].type != dtype:
                raise ValueError(
                    f"{self.path}: graph input {name!r} is {inputs[name].type} {inputs[name].shape}, but the "
                    f"file's metadata says {dtype} {shape}"
                )

    def _run(self, frames: ArrayLike, audio: ArrayLike) -> np.ndarray:
        feed = {
            "frames": np.ascontiguousarray(torch.as_tensor(frames).cpu().numpy()),  # [T, 3, H, W] uint8
            "audio": np.ascontiguousarray(torch.as_tensor(audio).cpu().numpy(), dtype=np.float32),
        }
        (probs,) = self.session.run(["probs"], feed)  # [T, H, W]
        return probs

    def end_profiling(self) -> str:
        """Stop profiling; returns the JSON profile's path (only with ``enable_profiling``)."""
        return self.session.end_profiling()


def _check_onnx_against_config(segmenter: OnnxRuntimeSegmenter, cfg) -> None:
    """The ONNX file must take the clips the config's pre-processing produces."""
    size = int(cfg.INPUT.IMAGE_SIZE)
    wanted = (int(cfg.MODEL.AQFORMER.NUM_FRAMES), 3, size, size)
    if wanted != segmenter.frames_shape:
        raise ValueError(
            f"{segmenter.path}: exported for clips of T={segmenter.num_frames} frames of "
            f"{segmenter.height}x{segmenter.width} (frames {list(segmenter.frames_shape)}), but the config makes "
            f"clips of T={wanted[0]} frames of {size}x{size} (frames {list(wanted)}; MODEL.AQFORMER.NUM_FRAMES, "
            "INPUT.IMAGE_SIZE); export it again with this config or change the config"
        )
    if cfg.INPUT.FORMAT != segmenter.input_format:
        raise ValueError(
            f"{segmenter.path}: exported for {segmenter.input_format} frames, but INPUT.FORMAT is {cfg.INPUT.FORMAT}"
        )


def build_segmenter(cfg, backend: str = "torch", onnx_path: Optional[str] = None,
                    num_threads: Optional[int] = None) -> ClipSegmenter:
    """A segmenter for the clips ``cfg`` describes (MODEL.AQFORMER.NUM_FRAMES, INPUT.IMAGE_SIZE, INPUT.FORMAT).

    Args:
        cfg: config with the AQFormer keys; ``backend="torch"`` builds its model on ``cfg.MODEL.DEVICE``
            with ``cfg.MODEL.WEIGHTS``.
        backend: one of :data:`BACKENDS`.
        onnx_path: the ONNX file, required for (and only used by) "onnxruntime".
        num_threads: intra-op threads of ONNX Runtime (None: its default).

    Raises:
        ValueError: unknown backend, missing ``onnx_path``, or an ONNX file exported for other clips.
        FileNotFoundError: the ONNX file or the weights file does not exist.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "torch":
        if onnx_path:
            raise ValueError(f"{onnx_path}: an ONNX file is only used with the 'onnxruntime' backend")
        return TorchSegmenter(cfg)
    if not onnx_path:
        raise ValueError("the 'onnxruntime' backend needs an ONNX file (tools/export_onnx.py writes one)")
    arch = cfg.MODEL.META_ARCHITECTURE
    if not clip_module_class(META_ARCH_REGISTRY.get(arch)).onnx_exportable:
        raise ValueError(
            f"{onnx_path}: MODEL.META_ARCHITECTURE {arch} (AVSS class scores) has no ONNX export; the 'onnxruntime' "
            "backend runs S4 / MS3 models only. Use the 'torch' backend"
        )
    segmenter = OnnxRuntimeSegmenter(onnx_path, num_threads=num_threads)
    _check_onnx_against_config(segmenter, cfg)
    return segmenter

