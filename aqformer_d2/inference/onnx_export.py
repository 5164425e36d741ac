"""ONNX export of AQFormer for clips of a fixed size, and the metadata that records that size.

The exported graph (opset :data:`DEFAULT_OPSET`) has two inputs and one output:

* ``frames``: uint8 ``[T, 3, H, W]`` in the channel order ``INPUT.FORMAT``;
* ``audio``: float32 ``[T, 1, 96, 64]`` VGGish log-mel examples;
* ``probs``: float32 ``[T, H, W]`` sound probabilities.

It is the TorchScript-based exporter's trace of :class:`~.clip_module.ClipSegmentationModule` (the
``torch.export``-based exporter needs ``onnxscript``, which this project does not install). T, H and W are
fixed, and stored in the model's metadata (``aqformer.num_frames``, ``aqformer.height``, ``aqformer.width``,
``aqformer.input_format``) with the config and weights it came from; :func:`parse_clip_metadata` reads them
back. Because a trace can silently turn an input into a constant, :func:`check_graph_inputs` verifies
that both inputs are graph inputs of the expected type and shape and that nodes consume them.
"""
from __future__ import annotations

import logging
import warnings
from typing import Dict, Mapping, Optional

import torch

from .clip_module import ClipSegmentationModule, clip_module_class

__all__ = [
    "DEFAULT_OPSET",
    "INPUT_NAMES",
    "OUTPUT_NAME",
    "METADATA_PREFIX",
    "export_clip_onnx",
    "check_graph_inputs",
    "parse_clip_metadata",
]

logger = logging.getLogger(__name__)

# Opset 17: LayerNormalization is one op (ONNX Runtime runs it fused); GridSample exists from 16.
DEFAULT_OPSET = 17
INPUT_NAMES = ("frames", "audio")
OUTPUT_NAME = "probs"
METADATA_PREFIX = "aqformer."
# Metadata keys :func:`parse_clip_metadata` requires, with their types.
_REQUIRED_METADATA = {"num_frames": int, "height": int, "width": int, "input_format": str}


def _example_clip(module: ClipSegmentationModule, device: torch.device, seed: int):
    """A random clip of the module's shape (the trace's example input)."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, module.frames_shape, generator=g, dtype=torch.uint8)  # [T, 3, H, W]
    audio = torch.randn(module.audio_shape, generator=g)  # [T, 1, 96, 64]
    return frames.to(device), audio.to(device)


def check_graph_inputs(model_proto, path: str, module: ClipSegmentationModule) -> None:
    """Both inputs and the output exist with the expected types and static shapes, and nodes consume both
    inputs (a trace that folded an input into a constant fails here).

    Raises:
        ValueError: naming ``path`` and what is wrong.
    """
    from onnx import TensorProto

    def describe(value_info):
        t = value_info.type.tensor_type
        return t.elem_type, [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]

    graph = model_proto.graph
    inputs = {v.name: v for v in graph.input}
    expected = {
        "frames": (TensorProto.UINT8, list(module.frames_shape)),
        "audio": (TensorProto.FLOAT, list(module.audio_shape)),
    }
    consumed = {name for node in graph.node for name in node.input}
    for name, want in expected.items():
        if name not in inputs:
            raise ValueError(f"{path}: the exported graph has no input {name!r} (inputs: {sorted(inputs)})")
        if describe(inputs[name]) != want:
            raise ValueError(f"{path}: input {name!r} is (type, shape) {describe(inputs[name])}, expected {want}")
        if name not in consumed:
            raise ValueError(f"{path}: no node of the exported graph reads input {name!r} (folded into a constant)")
    outputs = {v.name: v for v in graph.output}
    want_out = (TensorProto.FLOAT, [module.num_frames, module.height, module.width])
    if list(outputs) != [OUTPUT_NAME] or describe(outputs[OUTPUT_NAME]) != want_out:
        raise ValueError(
            f"{path}: expected one output {OUTPUT_NAME!r} {want_out}, got "
            f"{ {k: describe(v) for k, v in outputs.items()} }"
        )


def export_clip_onnx(
    model: torch.nn.Module,
    path: str,
    *,
    num_frames: int,
    height: int,
    width: int,
    input_format: str,
    extra_metadata: Optional[Mapping[str, str]] = None,
    opset: int = DEFAULT_OPSET,
    seed: int = 0,
) -> Dict[str, str]:
    """Write ``model`` (an AQFormer meta-architecture, on the CPU) to ``path`` as one ONNX model for clips
    of ``num_frames`` frames of ``height`` x ``width``.

    Args:
        model: the meta-architecture; it is put in eval mode.
        path: the .onnx file to write (weights inside it; one file).
        num_frames, height, width: the fixed clip shape T, H, W.
        input_format: channel order of the frames, stored in the metadata.
        extra_metadata: more key -> value strings for the metadata (prefixed with ``aqformer.``).
        opset: ONNX opset.
        seed: seed of the random example clip the trace runs on.

    Returns:
        the metadata written (full keys -> values).

    Raises:
        ValueError: the model's clip head is not exportable (the AVSS meta-architecture: its graph would need
            a [T, K, H, W] output and the per-frame semantic inference; not supported), before anything is written.
    """
    import onnx

    if not clip_module_class(type(model)).onnx_exportable:
        raise ValueError(
            f"{path}: ONNX export of {type(model).__name__} (the AVSS semantic head, class scores [T, K, H, W]) is "
            "not supported; run it with the PyTorch backend (demo/demo.py --backend torch)"
        )
    module = ClipSegmentationModule(model, num_frames, height, width)
    frames, audio = _example_clip(module, model.device, seed)
    # Not under torch.no_grad(): without autograd, nn.MultiheadAttention takes its fused fast path
    # (aten::_native_multi_head_attention), which has no ONNX symbolic.
    with warnings.catch_warnings():
        # The trace turns every Python-level shape check into a constant (intended: the shapes are fixed),
        # and the TorchScript exporter announces its deprecation; neither is actionable here.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            module,
            (frames, audio),
            path,
            dynamo=False,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            do_constant_folding=True,
        )
    proto = onnx.load(path)
    check_graph_inputs(proto, path, module)
    metadata = {
        "num_frames": str(num_frames),
        "height": str(height),
        "width": str(width),
        "input_format": input_format,
        "inputs": f"frames uint8 {list(module.frames_shape)} ({input_format}); audio float32 {list(module.audio_shape)}",
        "output": f"probs float32 [{num_frames}, {height}, {width}]",
    }
    metadata.update({k: str(v) for k, v in (extra_metadata or {}).items()})
    full = {METADATA_PREFIX + k: v for k, v in metadata.items()}
    del proto.metadata_props[:]
    for key, value in full.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, path)
    logger.info("wrote %s: frames %s, audio %s -> probs [%d, %d, %d] (opset %d)", path,
                list(module.frames_shape), list(module.audio_shape), num_frames, height, width, opset)
    return full


def parse_clip_metadata(props: Mapping[str, str], path: str) -> Dict[str, object]:
    """The clip shape and channel order from an exported file's metadata map (key -> string).

    Returns:
        dict with num_frames, height, width (int), input_format (str) and every other ``aqformer.`` key.

    Raises:
        ValueError: a required key is missing or not a positive integer (the file was not written by
        :func:`export_clip_onnx`).
    """
    out: Dict[str, object] = {}
    for key, value in props.items():
        if key.startswith(METADATA_PREFIX):
            out[key[len(METADATA_PREFIX):]] = value
    for key, kind in _REQUIRED_METADATA.items():
        if key not in out:
            raise ValueError(
                f"{path}: no '{METADATA_PREFIX}{key}' in the model metadata; not an AQFormer clip model written by "
                "tools/export_onnx.py"
            )
        if kind is int:
            text = str(out[key])
            if not text.isdigit() or int(text) < 1:
                raise ValueError(f"{path}: metadata '{METADATA_PREFIX}{key}' = {text!r} is not a positive integer")
            out[key] = int(text)
    return out
