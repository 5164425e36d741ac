"""VGGish's layer layout, as torchvggish released it, and the strict check of a state dict against it.

The ``VGGish`` module (:mod:`.vggish`) is built from these constants so that its state dict is key for key
and shape for shape torchvggish's ``vggish-10086976.pth``. The same layout checks a torchvggish-format file
before :func:`convert_torchvggish_state_dict` places it in a whole-model checkpoint (``tools/convert_vggish.py``).
"""
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

from aqformer_d2.audio.logmel import NUM_FRAMES, NUM_MEL_BINS
from aqformer_d2.checkpoint import torchvggish_model_state

__all__ = [
    "BLOCK_CONVS",
    "POOLED_HW",
    "VGGISH_CONV_CHANNELS",
    "VGGISH_FC_DIMS",
    "VGGISH_OUT_DIM",
    "convert_torchvggish_state_dict",
    "describe_value",
    "vggish_state_dict_shapes",
]

VGGISH_CONV_CHANNELS = (64, 128, 256, 512)
VGGISH_FC_DIMS = (4096, 4096)
VGGISH_OUT_DIM = 128
# Convolutions per block (each block ends with a 2x2 max pool).
BLOCK_CONVS = (1, 1, 2, 2)
# Spatial size of an example [96 frames, 64 mel bands] after the four 2x2 pools.
POOLED_HW = (NUM_FRAMES // 16, NUM_MEL_BINS // 16)  # (6, 4)


def _check_positive_ints(name: str, values: Sequence[Any], length: Optional[int] = None) -> Tuple[int, ...]:
    values = tuple(values)
    if length is not None and len(values) != length:
        raise ValueError(f"VGGish: {name} must have {length} entries, got {list(values)}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"VGGish: {name} must hold positive integers, got {list(values)}")
    return tuple(int(v) for v in values)


def vggish_state_dict_shapes(
    conv_channels: Sequence[int] = VGGISH_CONV_CHANNELS,
    fc_dims: Sequence[int] = VGGISH_FC_DIMS,
    out_dim: int = VGGISH_OUT_DIM,
) -> "OrderedDict[str, Tuple[int, ...]]":
    """Key -> shape of the VGGish state dict in torchvggish's layout (without PCA buffers)."""
    conv_channels = _check_positive_ints("conv_channels", conv_channels, len(BLOCK_CONVS))
    fc_dims = _check_positive_ints("fc_dims", fc_dims)
    (out_dim,) = _check_positive_ints("out_dim", [out_dim])
    shapes: "OrderedDict[str, Tuple[int, ...]]" = OrderedDict()
    index, in_ch = 0, 1
    for width, num_convs in zip(conv_channels, BLOCK_CONVS):
        for _ in range(num_convs):
            shapes[f"features.{index}.weight"] = (width, in_ch, 3, 3)
            shapes[f"features.{index}.bias"] = (width,)
            index += 2  # conv, relu
            in_ch = width
        index += 1  # pool
    in_features = in_ch * POOLED_HW[0] * POOLED_HW[1]
    for j, dim in enumerate(list(fc_dims) + [out_dim]):
        shapes[f"embeddings.{2 * j}.weight"] = (dim, in_features)
        shapes[f"embeddings.{2 * j}.bias"] = (dim,)
        in_features = dim
    return shapes


def describe_value(value: Any) -> str:
    """Shape of a tensor as a list, or the type name of anything else (for error messages)."""
    return str(list(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def _infer_vggish_widths(state_dict: Mapping, source: str) -> Tuple[List[int], List[int], int]:
    """(conv_channels, fc_dims, out_dim) from the weight shapes of a torchvggish-layout state dict."""
    conv_widths: List[Tuple[int, int]] = []
    fc_widths: List[Tuple[int, int]] = []
    for key, value in state_dict.items():
        parts = key.split(".")
        if len(parts) != 3 or parts[2] != "weight" or not parts[1].isdigit() or not isinstance(value, torch.Tensor):
            continue
        if parts[0] == "features" and value.ndim == 4:
            conv_widths.append((int(parts[1]), value.shape[0]))
        elif parts[0] == "embeddings" and value.ndim == 2:
            fc_widths.append((int(parts[1]), value.shape[0]))
    conv_widths.sort()
    fc_widths.sort()
    if len(conv_widths) != sum(BLOCK_CONVS) or len(fc_widths) < 1:
        raise ValueError(
            f"{source}: not a torchvggish VGGish state dict: found {len(conv_widths)} conv weights "
            f"(need {sum(BLOCK_CONVS)}) and {len(fc_widths)} linear weights under features.* / embeddings.*"
        )
    firsts = np.cumsum((0,) + BLOCK_CONVS[:-1])  # index of each block's first conv
    conv_channels = [int(conv_widths[i][1]) for i in firsts]
    dims = [int(w) for _, w in fc_widths]
    return conv_channels, dims[:-1], dims[-1]


def convert_torchvggish_state_dict(
    state_dict: Mapping,
    pca_params: Optional[Mapping] = None,
    prefix: str = "audio_encoder.",
    source: str = "state dict",
) -> "OrderedDict[str, torch.Tensor]":
    """Check a torchvggish state dict strictly against the layout, then re-key it for the full AQFormer model.

    Args:
        state_dict: torchvggish layout (``vggish-10086976.pth``, or the same layout with other widths); checked
            against :func:`vggish_state_dict_shapes` of the widths read from its own weight shapes.
        pca_params: optional ``{"pca_eigen_vectors": [D, D], "pca_means": [D] or [D, 1]}`` (tensors or numpy
            arrays), written as ``pproc.pca_matrix`` / ``pproc.pca_means``; D must be the embedding width.
        prefix: module path of the audio encoder in the model ("audio_encoder.").
        source: name used in error messages (the file name).

    Returns:
        ``OrderedDict`` ``prefix + key -> tensor`` (:func:`aqformer_d2.checkpoint.torchvggish_model_state`).
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"{source}: expected a state dict, got {type(state_dict).__name__}")
    conv_channels, fc_dims, out_dim = _infer_vggish_widths(state_dict, source)
    expected = vggish_state_dict_shapes(conv_channels, fc_dims, out_dim)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: {describe_value(state_dict[k])} vs {list(shape)}"
        for k, shape in expected.items()
        if k in state_dict
        and (not isinstance(state_dict[k], torch.Tensor) or tuple(state_dict[k].shape) != tuple(shape))
    ]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{source}: does not match the torchvggish layout (conv_channels={conv_channels}, fc_dims={fc_dims}, "
            f"out_dim={out_dim}): missing keys {missing}; unexpected keys {unexpected}; shape mismatches {mismatched}"
        )
    out = torchvggish_model_state({k: state_dict[k] for k in expected}, pca_params, prefix=prefix, source=source)
    pca_width = out[prefix + "pproc.pca_matrix"].shape[0] if pca_params is not None else out_dim
    if pca_width != out_dim:
        raise ValueError(f"{source}: PCA parameters are {pca_width}-d and do not fit embedding width {out_dim}")
    return out
