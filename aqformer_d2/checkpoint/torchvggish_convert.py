"""torchvggish's released VGGish weights: their state-dict layout, and conversion to a whole-model checkpoint.

The layout (``features.N`` / ``embeddings.N`` of ``vggish-10086976.pth``) is described in
:mod:`aqformer_d2.modeling.audio_encoder.vggish`, whose ``VGGish`` module is built to match it. This module
holds the part that needs no module: the expected key -> shape table, and the re-keying of a torchvggish
state dict (and its PCA parameters) for the full AQFormer model, used by ``tools/convert_vggish.py`` and by
the ``torchvggish://`` weight URLs (:mod:`aqformer_d2.checkpoint.url_schemes`).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from aqformer_d2.audio.logmel import NUM_FRAMES, NUM_MEL_BINS

__all__ = [
    "PCA_EIGEN_VECTORS_NAME",
    "PCA_MEANS_NAME",
    "VGGISH_CONV_CHANNELS",
    "VGGISH_FC_DIMS",
    "VGGISH_OUT_DIM",
    "convert_torchvggish_state_dict",
    "torchvggish_to_detectron2_checkpoint",
    "vggish_state_dict_shapes",
]

VGGISH_CONV_CHANNELS = (64, 128, 256, 512)
VGGISH_FC_DIMS = (4096, 4096)
VGGISH_OUT_DIM = 128
# Convolutions per block (each block ends with a 2x2 max pool).
BLOCK_CONVS = (1, 1, 2, 2)
# Spatial size of an example [96 frames, 64 mel bands] after the four 2x2 pools.
POOLED_HW = (NUM_FRAMES // 16, NUM_MEL_BINS // 16)  # (6, 4)
# Keys of torchvggish's PCA parameter file.
PCA_EIGEN_VECTORS_NAME = "pca_eigen_vectors"
PCA_MEANS_NAME = "pca_means"


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


def as_float_tensor(value: Any, path: str, key: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor) or not torch.is_floating_point(value):
        raise ValueError(f"{path}: entry {key!r} must be a floating-point tensor or array, got {type(value).__name__}")
    return value.to(torch.float32)

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
    """Re-key a torchvggish state dict (and optional PCA params) for the full AQFormer model.

    Args:
        state_dict: torchvggish layout (``vggish-10086976.pth``, or the same layout with other
            widths); checked strictly against :func:`vggish_state_dict_shapes` of the widths read
            from its own weight shapes.
        pca_params: optional ``{"pca_eigen_vectors": [D, D], "pca_means": [D] or [D, 1]}``
            (tensors or numpy arrays), written as ``pproc.pca_matrix`` / ``pproc.pca_means``.
        prefix: module path of the audio encoder in the model ("audio_encoder.").
        source: name used in error messages (the file name).

    Returns:
        ``OrderedDict`` ``prefix + key -> tensor`` (values copied unchanged, PCA as float32).
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
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict(
        (prefix + k, state_dict[k].detach().clone()) for k in expected
    )
    if pca_params is not None:
        if not isinstance(pca_params, Mapping):
            raise ValueError(f"{source}: PCA parameters must be a dict, got {type(pca_params).__name__}")
        keys = {PCA_EIGEN_VECTORS_NAME, PCA_MEANS_NAME}
        if set(pca_params) != keys:
            raise ValueError(
                f"{source}: PCA parameters must hold exactly {sorted(keys)}, got {sorted(map(str, pca_params))}"
            )
        matrix = as_float_tensor(pca_params[PCA_EIGEN_VECTORS_NAME], source, PCA_EIGEN_VECTORS_NAME)
        means = as_float_tensor(pca_params[PCA_MEANS_NAME], source, PCA_MEANS_NAME)
        if tuple(matrix.shape) != (out_dim, out_dim) or means.numel() != out_dim:
            raise ValueError(
                f"{source}: PCA shapes {list(matrix.shape)} / {list(means.shape)} do not fit embedding width {out_dim}"
            )
        out[prefix + "pproc.pca_matrix"] = matrix.clone()  # [D, D]
        out[prefix + "pproc.pca_means"] = means.reshape(out_dim, 1).clone()  # [D, 1]
    return out


def torchvggish_to_detectron2_checkpoint(
    state_dict: Mapping,
    pca_params: Optional[Mapping] = None,
    *,
    prefix: str = "audio_encoder.",
    source: str = "state dict",
) -> Dict[str, Any]:
    """A whole-model checkpoint that ``DetectionCheckpointer`` / ``AQCheckpointer`` loads as ``MODEL.WEIGHTS``.

    Args:
        state_dict, pca_params, prefix, source: as for :func:`convert_torchvggish_state_dict`.

    Returns:
        ``{"model": {prefix + key: tensor}, "__author__": "torchvggish", "matching_heuristics": False}``
    """
    model = convert_torchvggish_state_dict(state_dict, pca_params=pca_params, prefix=prefix, source=source)
    return {"model": dict(model), "__author__": "torchvggish", "matching_heuristics": False}
