"""torchvggish's released VGGish files -> names of the whole AQFormer model: pure functions of the loaded dicts.

``vggish-10086976.pth`` holds the network under the names AQFormer's VGGish module uses itself
(``features.N.*``, ``embeddings.N.*``; the layout is described with the model in
:mod:`aqformer_d2.modeling.audio_encoder.vggish_layout`), so converting it only prefixes the keys.
``vggish_pca_params-970ea276.pth`` holds ``pca_eigen_vectors [D, D]`` and ``pca_means [D]`` (numpy arrays),
which become the module's buffers ``pproc.pca_matrix [D, D]`` / ``pproc.pca_means [D, 1]``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping, Optional, Tuple

import numpy as np
import torch

from .state_dict_report import to_tensor_state_dict

__all__ = ["PCA_EIGEN_VECTORS_NAME", "PCA_MEANS_NAME", "torchvggish_model_state", "vggish_pca_tensors"]

# Keys of torchvggish's PCA parameter file.
PCA_EIGEN_VECTORS_NAME = "pca_eigen_vectors"
PCA_MEANS_NAME = "pca_means"


def _float_tensor(value: Any, source: str, key: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor) or not torch.is_floating_point(value):
        raise ValueError(f"{source}: entry {key!r} must be a float tensor or array, got {type(value).__name__}")
    return value.to(torch.float32).clone()


def vggish_pca_tensors(params: Any, source: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """torchvggish's PCA parameters (tensors or numpy arrays) -> ``(pca_matrix [D, D], pca_means [D, 1])`` float32.

    Raises:
        ValueError: not a dict, other keys than the two, non-float values, or shapes that do not fit (the
            message names ``source``).
    """
    if not isinstance(params, Mapping):
        raise ValueError(f"{source}: VGGish PCA parameters must be a dict, got {type(params).__name__}")
    expected = {PCA_EIGEN_VECTORS_NAME, PCA_MEANS_NAME}
    missing, unexpected = sorted(expected - set(params)), sorted(map(str, set(params) - expected))
    if missing or unexpected:
        raise ValueError(f"{source}: VGGish PCA parameters: missing keys {missing}, unexpected keys {unexpected}")
    matrix = _float_tensor(params[PCA_EIGEN_VECTORS_NAME], source, PCA_EIGEN_VECTORS_NAME)
    means = _float_tensor(params[PCA_MEANS_NAME], source, PCA_MEANS_NAME)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{source}: {PCA_EIGEN_VECTORS_NAME} must be square [D, D], got {list(matrix.shape)}")
    dim = matrix.shape[0]
    if tuple(means.shape) not in ((dim,), (dim, 1)):
        raise ValueError(f"{source}: {PCA_MEANS_NAME} must be [{dim}] or [{dim}, 1], got {list(means.shape)}")
    return matrix, means.reshape(dim, 1)


def torchvggish_model_state(
    state_dict: Mapping[str, Any],
    pca_params: Optional[Mapping[str, Any]] = None,
    *,
    prefix: str = "audio_encoder.",
    source: str = "<state dict>",
) -> "OrderedDict[str, torch.Tensor]":
    """torchvggish's state dict (and PCA parameters, if given) under ``prefix`` in the whole model.

    Args:
        state_dict: ``features.N.*`` / ``embeddings.N.*`` tensors, copied unchanged.
        pca_params: the PCA file's dict (:func:`vggish_pca_tensors`), written as ``pproc.pca_matrix`` /
            ``pproc.pca_means``; None leaves them out.
        prefix: the audio encoder's place in the model (``"audio_encoder."`` in AQFormer).
        source: file name for messages.
    """
    out = OrderedDict((prefix + k, v.detach().clone()) for k, v in to_tensor_state_dict(state_dict, source).items())
    if pca_params is not None:
        out[prefix + "pproc.pca_matrix"], out[prefix + "pproc.pca_means"] = vggish_pca_tensors(pca_params, source)
    return out
