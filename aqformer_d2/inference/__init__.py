"""Clip-level and video-level inference shared by the demo, the main job, the ONNX export and the benchmarks.

* :mod:`.clips`: clip planning (T seconds per clip, padding of the last one), frame resizing, VGGish
  examples per clip, resizing of the probabilities to the frame size.
* :mod:`.clip_module`: :class:`ClipSegmentationModule` (sound probabilities) and :class:`SemanticClipModule`
  (AVSS class scores), one clip of fixed T, H, W through the model on tensors; :func:`clip_module_class`.
* :mod:`.outputs`: what a segmenter returns (:class:`SoundProbabilities`, :class:`ClassScores`), turned into
  per-pixel labels at the frame size, and the legend of the label values.
* :mod:`.onnx_export`: :func:`export_clip_onnx` and the metadata that records T, H, W.
* :mod:`.segmenter`: :class:`ClipSegmenter` with a PyTorch eager and an ONNX Runtime backend.
* :mod:`.video`: a whole video through a segmenter: :func:`load_video` / :func:`load_frame_files` and the clip
  loop :func:`predict_video` (plan -> frames -> audio -> segmenter -> labels at the frame size); :func:`muted`.

Import direction: this package imports ``aqformer_d2.modeling`` (``build_aq_model``),
``aqformer_d2.checkpoint`` and ``aqformer_d2.audio``; ``data``, ``evaluation``, ``audio``, ``utils`` and
``checkpoint`` never import it. ``onnx`` and ``onnxruntime`` are imported only when used.
"""
from .clip_module import ClipSegmentationModule, SemanticClipModule, clip_module_class, padded_size
from .clips import (
    INPUT_FORMATS,
    ClipPlan,
    clip_audio,
    clip_frames,
    list_frame_folder,
    plan_clips,
    read_rgb,
    resize_frame,
    resize_probs,
)
from .onnx_export import DEFAULT_OPSET, check_graph_inputs, export_clip_onnx, parse_clip_metadata
from .outputs import SOUNDING_OBJECT_COLOR, ClassScores, ClipOutput, Legend, SoundProbabilities
from .segmenter import (
    BACKENDS,
    ClipSegmenter,
    OnnxRuntimeSegmenter,
    TorchSegmenter,
    build_inference_model,
    build_segmenter,
)
from .video import MODEL_SAMPLE_RATE, ClipPrediction, VideoInput, load_frame_files, load_video, muted, predict_video

__all__ = [
    "BACKENDS",
    "SOUNDING_OBJECT_COLOR",
    "ClassScores",
    "ClipOutput",
    "Legend",
    "SemanticClipModule",
    "SoundProbabilities",
    "clip_module_class",
    "muted",
    "ClipPlan",
    "ClipPrediction",
    "ClipSegmentationModule",
    "ClipSegmenter",
    "DEFAULT_OPSET",
    "INPUT_FORMATS",
    "MODEL_SAMPLE_RATE",
    "OnnxRuntimeSegmenter",
    "TorchSegmenter",
    "VideoInput",
    "build_inference_model",
    "build_segmenter",
    "check_graph_inputs",
    "clip_audio",
    "clip_frames",
    "export_clip_onnx",
    "list_frame_folder",
    "load_frame_files",
    "load_video",
    "padded_size",
    "parse_clip_metadata",
    "plan_clips",
    "predict_video",
    "read_rgb",
    "resize_frame",
    "resize_probs",
]
