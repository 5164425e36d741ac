"""VGGish audio encoder (Hershey et al., 2017), the audio encoder of AQFormer §3.1.

The module's parameter names and shapes are those of torchvggish's released ``vggish-10086976.pth``
(a conversion of the AudioSet TF-slim checkpoint), so that file loads strictly:

- ``features``: Sequential [conv, relu, pool, conv, relu, pool, conv, relu, conv, relu, pool,
  conv, relu, conv, relu, pool]; 3x3 convs (padding 1), 2x2 max pools. Parameters at indices
  0, 3, 6, 8, 11, 13 (``features.N.weight`` / ``features.N.bias``).
- ``embeddings``: Sequential [linear, relu, linear, relu, linear, relu] (torchvggish keeps a ReLU
  after the 128-d layer). Parameters at indices 0, 2, 4.
- Between the two, the conv output ``[N, C, 6, 4]`` is flattened in channels-last order
  (``[N, 6, 4, C]``), which is the TF-slim flatten order the FC weights were trained with.

Optional PCA post-processing (``vggish_pca_params-970ea276.pth``) reproduces torchvggish's
``Postprocessor``: PCA whitening, clip to [-2, 2], 8-bit quantisation to {0..255}.
"""
import logging
import os
from collections.abc import Mapping
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
from detectron2.config import configurable
from torch import nn

from aqformer_d2.audio.logmel import NUM_FRAMES, NUM_MEL_BINS, waveform_to_examples
from aqformer_d2.checkpoint import load_checkpoint_file, local_weight_file, vggish_pca_tensors

from .vggish_layout import BLOCK_CONVS as _BLOCK_CONVS
from .vggish_layout import POOLED_HW as _POOLED_HW
from .vggish_layout import (  # noqa: F401  (convert_torchvggish_state_dict re-exported)
    VGGISH_CONV_CHANNELS,
    VGGISH_FC_DIMS,
    VGGISH_OUT_DIM,
    convert_torchvggish_state_dict,
    describe_value as _describe,
    vggish_state_dict_shapes,
)

from ..layers.linear import Linear
from .build import AUDIO_ENCODER_REGISTRY

__all__ = [
    "VGGish",
    "VGGishPCA",
    "VGGISH_INITS",
    "vggish_state_dict_shapes",
    "load_torch_file",
    "load_vggish_pca_params",
    "convert_torchvggish_state_dict",
]

logger = logging.getLogger(__name__)

# torchvggish / AudioSet quantisation range of the PCA post-processing.
QUANTIZE_MIN_VAL = -2.0
QUANTIZE_MAX_VAL = 2.0


def load_torch_file(path: Union[str, os.PathLike], what: str) -> Any:
    """Read a ``.pth`` safely: :func:`aqformer_d2.checkpoint.load_checkpoint_file`
    (``torch.load(weights_only=True)``, numpy arrays allowed, no other code can run). ``what`` names the
    file's role in the error raised when it is missing. ``path`` may be a weight URL such as
    ``torchvggish://vggish`` (fetched into the cache as released, see :mod:`aqformer_d2.checkpoint.url_schemes`)."""
    path = local_weight_file(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: {what} file not found")
    return load_checkpoint_file(path)


def load_vggish_pca_params(path: Union[str, os.PathLike]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Read torchvggish's ``vggish_pca_params-970ea276.pth``.

    Returns:
        ``(pca_matrix [D, D], pca_means [D, 1])`` float32 (means stored as ``[D]`` are reshaped).
    """
    path = os.fspath(path)
    return vggish_pca_tensors(load_torch_file(path, "VGGish PCA parameters"), path)


def _keep_layer_defaults(module: nn.Module) -> None:
    """``init="pytorch"``: keep PyTorch's own initialisation of Conv2d / Linear (kaiming_uniform with a=sqrt(5),
    uniform biases)."""


def _he_normal(module: nn.Module) -> None:
    """``init="he"``: He et al. (2015) normal initialisation for ReLU nets, std = sqrt(2 / fan_in), zero biases.

    It keeps the activations' scale from layer to layer. PyTorch's defaults shrink it by about 1/sqrt(6) per
    ReLU layer, so an 8-layer VGGish trained from scratch starts with an output that hardly depends on its input
    (its spread over examples is ~1e-3 of the activations' after the first conv) and is set by the biases.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(m.bias)


# Initialisations of a VGGish trained from scratch (``weights=""``), by the name MODEL.AUDIO_ENCODER.INIT gives.
VGGISH_INITS = {"pytorch": _keep_layer_defaults, "he": _he_normal}


class VGGishPCA(nn.Module):
    """torchvggish's embedding post-processing: PCA (with whitening), clip to [-2, 2], 8-bit quantisation.

    Buffers ``pca_matrix [D, D]`` and ``pca_means [D, 1]`` (torchvggish's ``pproc`` names). The output
    holds integers 0..255 as floats; rounding has no useful gradient.

    Args:
        dim: embedding width D.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("pca_matrix", torch.zeros(dim, dim))  # [D, D]
        self.register_buffer("pca_means", torch.zeros(dim, 1))  # [D, 1]

    def load_file(self, path: Union[str, os.PathLike]) -> None:
        """Fill the buffers from a torchvggish PCA file (shape must match D)."""
        matrix, means = load_vggish_pca_params(path)
        if matrix.shape != self.pca_matrix.shape:
            raise ValueError(
                f"{os.fspath(path)}: PCA matrix is {list(matrix.shape)} but the encoder's embedding "
                f"width needs {list(self.pca_matrix.shape)}"
            )
        self.pca_matrix.copy_(matrix)
        self.pca_means.copy_(means)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """embeddings ``[N, D]`` -> quantised PCA embeddings ``[N, D]`` in {0, ..., 255}."""
        pca = (embeddings - self.pca_means.T) @ self.pca_matrix.T  # [N, D] = (P (e^T - mu))^T
        clipped = pca.clamp(QUANTIZE_MIN_VAL, QUANTIZE_MAX_VAL)
        scale = 255.0 / (QUANTIZE_MAX_VAL - QUANTIZE_MIN_VAL)
        return torch.round((clipped - QUANTIZE_MIN_VAL) * scale)  # [N, D]


@AUDIO_ENCODER_REGISTRY.register()
class VGGish(nn.Module):
    """VGGish: log-mel examples ``[N, 1, 96, 64]`` -> embeddings ``[N, out_dim]`` (C_a of §3.1).

    With the default widths its state dict is key-for-key and shape-for-shape torchvggish's
    ``vggish-10086976.pth``, and the released weights give torchvggish's embeddings.
    """

    @configurable
    def __init__(
        self,
        *,
        conv_channels: Sequence[int] = VGGISH_CONV_CHANNELS,
        fc_dims: Sequence[int] = VGGISH_FC_DIMS,
        out_dim: int = VGGISH_OUT_DIM,
        weights: str = "",
        pca_weights: str = "",
        freeze: bool = False,
        init: str = "pytorch",
    ):
        """
        Args:
            conv_channels: widths of the 4 conv blocks (1, 1, 2, 2 convs each). VGGish: 64, 128, 256, 512.
            fc_dims: widths of the hidden fully connected layers. VGGish: 4096, 4096.
            out_dim: embedding width C_a. VGGish: 128.
            weights: torchvggish state dict (``vggish-10086976.pth`` for the default widths), a local
                path or ``torchvggish://vggish``, loaded strictly; "" keeps the random initialisation.
            pca_weights: ``vggish_pca_params-970ea276.pth``, a local path or ``torchvggish://vggish_pca``;
                "" disables PCA post-processing.
            freeze: no gradients for the parameters, and the module stays in eval mode.
            init: random initialisation of the conv and FC layers, a key of ``VGGISH_INITS``: "pytorch"
                (PyTorch's layer defaults) or "he" (He normal, zero biases; for training from scratch).
                Loaded ``weights`` replace it.
        """
        if init not in VGGISH_INITS:
            raise ValueError(f"VGGish: unknown init {init!r} (MODEL.AUDIO_ENCODER.INIT); choose one of "
                             f"{sorted(VGGISH_INITS)}")
        super().__init__()
        shapes = vggish_state_dict_shapes(conv_channels, fc_dims, out_dim)  # validates the widths
        self.conv_channels = tuple(int(c) for c in conv_channels)
        self.fc_dims = tuple(int(d) for d in fc_dims)
        self._out_dim = int(out_dim)

        layers: List[nn.Module] = []
        in_ch = 1
        for width, num_convs in zip(self.conv_channels, _BLOCK_CONVS):
            for _ in range(num_convs):
                layers += [nn.Conv2d(in_ch, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                in_ch = width
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)

        fcs: List[nn.Module] = []
        in_features = in_ch * _POOLED_HW[0] * _POOLED_HW[1]
        for dim in list(self.fc_dims) + [self._out_dim]:
            fcs += [Linear(in_features, dim), nn.ReLU(inplace=True)]  # oneDNN for the large ones on the CPU
            in_features = dim
        self.embeddings = nn.Sequential(*fcs)

        VGGISH_INITS[init](self)
        own_shapes = {k: tuple(v.shape) for k, v in self.state_dict().items()}
        if own_shapes != dict(shapes):
            raise AssertionError("VGGish: module layout differs from vggish_state_dict_shapes")

        self.pproc = VGGishPCA(self._out_dim) if pca_weights else None
        if weights:
            self.load_torchvggish_weights(weights)
        if pca_weights:
            self.pproc.load_file(pca_weights)
            logger.info("VGGish: PCA post-processing parameters loaded from %s", pca_weights)

        self.freeze = bool(freeze)
        if self.freeze:
            for p in self.parameters():
                p.requires_grad_(False)
            self.eval()

    @classmethod
    def from_config(cls, cfg) -> Dict[str, Any]:
        c = cfg.MODEL.AUDIO_ENCODER
        return {
            "conv_channels": list(c.CONV_CHANNELS),
            "fc_dims": list(c.FC_DIMS),
            "out_dim": c.OUT_DIM,
            "weights": c.WEIGHTS,
            # MODEL.AUDIO_ENCODER.PCA_WEIGHTS is optional; absent means PCA off (the default).
            "pca_weights": c.PCA_WEIGHTS,
            "freeze": c.FREEZE,
            "init": c.INIT,
        }

    @property
    def out_dim(self) -> int:
        """C_a: width of the output embeddings."""
        return self._out_dim

    def train(self, mode: bool = True) -> "VGGish":
        """A frozen encoder stays in eval mode whatever ``mode`` is."""
        return super().train(mode and not self.freeze)

    def load_torchvggish_weights(self, path: Union[str, os.PathLike]) -> None:
        """Strictly load a torchvggish-layout state dict (``features.*``, ``embeddings.*``).

        ``pproc.pca_matrix`` / ``pproc.pca_means`` are loaded too when present and PCA is enabled.
        Raises ValueError naming the file and listing missing / unexpected / mis-shaped keys.
        """
        path = os.fspath(path)
        state = load_torch_file(path, "VGGish weights")
        if not isinstance(state, Mapping):
            raise ValueError(f"{path}: VGGish weights must be a state dict, got {type(state).__name__}")
        own = self.state_dict()
        required = [k for k in own if not k.startswith("pproc.")]
        missing = [k for k in required if k not in state]
        unexpected = [k for k in state if k not in own]
        mismatched = [
            f"{k}: file {_describe(state[k])} vs model {list(own[k].shape)}"
            for k in state
            if k in own and (not isinstance(state[k], torch.Tensor) or state[k].shape != own[k].shape)
        ]
        if missing or unexpected or mismatched:
            raise ValueError(
                f"{path}: VGGish weights do not match the encoder (conv_channels={list(self.conv_channels)}, "
                f"fc_dims={list(self.fc_dims)}, out_dim={self._out_dim}, PCA={'on' if self.pproc else 'off'}): "
                f"missing keys {missing}; unexpected keys {unexpected}; shape mismatches {mismatched}"
            )
        self.load_state_dict(dict(state), strict=False)
        logger.info("VGGish: loaded %d tensors from %s", len(state), path)

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        """examples ``[N, 1, 96, 64]`` (log-mel) -> embeddings ``[N, out_dim]``."""
        if examples.ndim != 4 or tuple(examples.shape[1:]) != (1, NUM_FRAMES, NUM_MEL_BINS):
            raise ValueError(
                f"VGGish: expected log-mel examples [N, 1, {NUM_FRAMES}, {NUM_MEL_BINS}], got {list(examples.shape)}"
            )
        x = self.features(examples)  # [N, C4, 6, 4]
        x = x.permute(0, 2, 3, 1).flatten(1)  # [N, 6 * 4 * C4], channels-last (TF-slim) order
        x = self.embeddings(x)  # [N, out_dim]
        if self.pproc is not None:
            x = self.pproc(x)  # [N, out_dim]
        return x

    def encode_waveform(self, waveform: Union[np.ndarray, torch.Tensor], sample_rate: int) -> torch.Tensor:
        """Waveform ``[S]`` (or ``[C, S]``) at sample_rate -> ``[T, out_dim]``, one row per 0.96 s example."""
        p = next(self.parameters())
        examples = waveform_to_examples(waveform, sample_rate).to(device=p.device, dtype=p.dtype)  # [T, 1, 96, 64]
        return self(examples)  # [T, out_dim]
