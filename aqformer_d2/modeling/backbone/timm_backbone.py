"""Any timm ``features_only`` model as a detectron2 backbone (the paper uses PVT-v2-b5).

``AQTimmBackbone`` is registered in detectron2's ``BACKBONE_REGISTRY``; set
``MODEL.BACKBONE.NAME = "AQTimmBackbone"`` and ``MODEL.TIMM_BACKBONE.*``. timm never downloads
(``pretrained=False`` always); ImageNet weights come from ``MODEL.TIMM_BACKBONE.WEIGHTS``: a local file (a
timm classification checkpoint, head included, or a features-only one) or ``timm://<model>`` (timm's
pretrained file, fetched into AQFormer's verified cache, see :mod:`aqformer_d2.checkpoint.url_schemes`),
read with ``torch.load(weights_only=True)`` or safetensors.

timm ImageNet weights expect RGB input normalised with ImageNet mean/std in 0-255 units
(``MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]``, ``MODEL.PIXEL_STD = [58.395, 57.12, 57.375]``).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence

import timm
import torch
from detectron2.config import configurable
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

from aqformer_d2.checkpoint import (
    LoadReport,
    StateDictLoadError,
    TimmNameMap,
    convert_timm_state_dict,
    create_timm_classification_model,
    load_state_dict_file,
    load_state_dict_with_report,
    local_weight_file,
    timm_feature_name_map,
)

from ..layers.linear import use_fast_linear

__all__ = ["AQTimmBackbone", "freeze_timm_feature_levels"]

logger = logging.getLogger(__name__)


def _freeze_batchnorms(root: nn.Module, module_names: Sequence[str]) -> int:
    """Replace the BatchNorm layers named in ``module_names`` by FrozenBatchNorm2d; returns how many."""
    count = 0
    for name in module_names:
        parent_name, _, attr = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        child = getattr(parent, attr)
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(parent, attr, FrozenBatchNorm2d.convert_frozen_batchnorm(child))
            count += 1
    return count


def freeze_timm_feature_levels(features: nn.Module, name_map: TimmNameMap, freeze_at: int) -> List[str]:
    """Freeze the first ``freeze_at`` feature levels of a timm ``features_only`` model.

    Level ``k`` is timm's ``feature_info[k]`` (all levels of the architecture, whatever
    ``out_indices`` were requested). Freezing level ``k - 1`` freezes its module and every module
    registered before it (stem, patch embedding, earlier stages): ``requires_grad = False`` and
    BatchNorm layers become ``FrozenBatchNorm2d``. For ResNets this matches detectron2's
    ``MODEL.RESNETS.FREEZE_AT`` (1 = stem, 2 = stem + res2); for PVT-v2, 1 = patch embedding + stage 1.

    Args:
        features: the timm features model.
        name_map: its :class:`~aqformer_d2.checkpoint.TimmNameMap` to the classification model.
        freeze_at: number of leading levels to freeze (0 = nothing).

    Returns:
        names (features-model naming) of the modules whose parameters were frozen.
    """
    info = features.feature_info
    num_levels = len(info)
    if not 0 <= freeze_at <= num_levels:
        raise ValueError(f"FREEZE_AT={freeze_at} is out of range: this timm model has {num_levels} feature levels")
    if freeze_at == 0:
        return []
    level_module = info[freeze_at - 1]["module"]  # classification-model name, e.g. "stages.1"
    modules = list(features.named_modules())  # pre-order: a module's subtree follows it contiguously
    classification_names = []
    for name, _ in modules:
        try:
            classification_names.append(name_map.to_classification(name))
        except KeyError:
            classification_names.append(None)
    positions = [
        i for i, cname in enumerate(classification_names)
        if cname is not None and (cname == level_module or cname.startswith(level_module + "."))
    ]
    # A level beyond the requested out_indices may have been pruned from the features model: all of it is frozen.
    end = positions[-1] if positions else len(modules) - 1
    frozen = [name for name, _ in modules[1 : end + 1]]
    for name, module in modules[: end + 1]:
        for param in module.parameters(recurse=False):
            param.requires_grad_(False)
    n_bn = _freeze_batchnorms(features, frozen)
    logger.info("Froze timm feature levels 0..%d (up to module '%s'): %d modules, %d BatchNorm -> FrozenBN",
                freeze_at - 1, level_module, len(frozen), n_bn)
    return frozen


@BACKBONE_REGISTRY.register()
class AQTimmBackbone(Backbone):
    """A timm ``features_only`` model returning detectron2-style named feature maps.

    Built from cfg by detectron2's ``build_backbone`` (``MODEL.BACKBONE.NAME = "AQTimmBackbone"``).
    Parameters live under ``body.`` (the timm features model), so a whole-model checkpoint names
    them ``backbone.body.<timm features key>`` (see tools/convert_timm_backbone.py).
    """

    @configurable
    def __init__(
        self,
        *,
        model_name: str,
        out_indices: Sequence[int],
        out_features: Sequence[str],
        in_channels: int = 3,
        freeze_at: int = 0,
        weights: str = "",
        timm_kwargs: Optional[Mapping[str, Any]] = None,
    ):
        """
        Args:
            model_name: timm architecture, e.g. "pvt_v2_b5" (the paper), "pvt_v2_b0", "resnet18".
            out_indices: timm feature levels to return (for ResNets level 0 is the stride-2 stem, so
                strides 4..32 are levels [1, 2, 3, 4]; for PVT-v2 they are [0, 1, 2, 3]).
            out_features: names given to those levels, same length, e.g. ["res2", "res3", "res4", "res5"].
            in_channels: input image channels.
            freeze_at: freeze the first ``freeze_at`` timm feature levels (see :func:`freeze_timm_feature_levels`).
            weights: timm checkpoint (.pth/.bin/.pt/.safetensors) or ``timm://<model>``, "" = random
                initialisation.
                Classification checkpoints are accepted: head / unused keys are reported and ignored;
                a missing backbone key raises :class:`~aqformer_d2.checkpoint.StateDictLoadError`.
            timm_kwargs: extra ``timm.create_model`` kwargs (e.g. ``{"drop_path_rate": 0.1}``).
        """
        super().__init__()
        out_indices = [int(i) for i in out_indices]
        out_features = [str(n) for n in out_features]
        if len(out_indices) != len(out_features) or not out_indices:
            raise ValueError(
                f"AQTimmBackbone: OUT_INDICES {out_indices} and OUT_FEATURES {out_features} must be non-empty "
                "and of equal length"
            )
        if len(set(out_features)) != len(out_features):
            raise ValueError(f"AQTimmBackbone: OUT_FEATURES {out_features} contains duplicates")
        if out_indices != sorted(set(out_indices)):
            # timm returns the levels in network order; names are matched to them one by one
            raise ValueError(f"AQTimmBackbone: OUT_INDICES {out_indices} must be strictly increasing")
        self.model_name = model_name
        # The classification model is built on the meta device: it validates out_indices and gives the
        # key mapping used by weight loading and freezing, without allocating memory.
        meta_classification = create_timm_classification_model(
            model_name, out_indices=out_indices, in_chans=in_channels, extra_kwargs=timm_kwargs
        )

        self.body = timm.create_model(
            model_name,
            pretrained=False,
            features_only=True,
            out_indices=tuple(out_indices),
            in_chans=in_channels,
            **dict(timm_kwargs or {}),
        )
        # timm's linear layers (PVT-v2: all attention and MLP projections) computed by aqformer_d2.modeling.ops.linear
        # (oneDNN on the CPU where that is faster); same parameters and state-dict keys.
        self.fast_linear_layers = use_fast_linear(self.body)
        self._name_map = timm_feature_name_map(self.body, meta_classification)
        fmt = getattr(self.body, "output_fmt", "NCHW")
        self._channels_last_output = getattr(fmt, "value", fmt) == "NHWC"

        channels = self.body.feature_info.channels()
        strides = self.body.feature_info.reduction()
        self._out_features = list(out_features)
        self._out_feature_channels = dict(zip(out_features, channels))
        self._out_feature_strides = dict(zip(out_features, strides))
        self._in_channels = in_channels

        self.load_report: Optional[LoadReport] = None
        if weights:
            self.load_report = self.load_timm_weights(weights)
        self.frozen_modules = freeze_timm_feature_levels(self.body, self._name_map, freeze_at)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec) -> Dict[str, Any]:
        timm_cfg = cfg.MODEL.TIMM_BACKBONE
        return {
            "model_name": timm_cfg.NAME,
            "out_indices": list(timm_cfg.OUT_INDICES),
            "out_features": list(timm_cfg.OUT_FEATURES),
            "in_channels": input_shape.channels if input_shape.channels is not None else 3,
            "freeze_at": timm_cfg.FREEZE_AT,
            "weights": timm_cfg.WEIGHTS,
        }

    def load_timm_weights(self, path: str) -> LoadReport:
        """Load a timm checkpoint (local file or ``timm://`` URL; classification or features naming) into ``self.body``.

        Head and other keys without a place in the features model are reported as unexpected and
        ignored. Raises :class:`~aqformer_d2.checkpoint.StateDictLoadError` (with a table naming the
        file) if any features-model key is missing or has a different shape.
        """
        state_dict = load_state_dict_file(local_weight_file(path))
        renamed, leftover = convert_timm_state_dict(state_dict, self._name_map, self.body.state_dict().keys())
        # Leftover keys go in under their own names so that the report lists them as unexpected (ignored).
        combined = dict(renamed)
        for key in leftover:
            combined[key] = state_dict[key]
        try:
            return load_state_dict_with_report(
                self.body, combined, source=path, strict=True, ignore_unexpected=True
            )
        except StateDictLoadError as e:
            raise StateDictLoadError(
                f"MODEL.TIMM_BACKBONE.WEIGHTS={path} does not fit timm model {self.model_name!r} "
                f"(features_only): {e}",
                e.report,
            ) from e

    @property
    def size_divisibility(self) -> int:
        return 32

    @property
    def padding_constraints(self) -> Dict[str, int]:
        """Newer detectron2 releases read this instead of ``size_divisibility``."""
        return {"size_divisibility": 32}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """x: [N, C_in, H, W] normalised images -> {name: [N, C_i, ~H/s_i, ~W/s_i]}."""
        if x.dim() != 4 or x.shape[1] != self._in_channels:
            raise ValueError(
                f"AQTimmBackbone({self.model_name}) expects images [N, {self._in_channels}, H, W], got {tuple(x.shape)}"
            )
        outputs = self.body(x)
        if isinstance(outputs, Mapping):
            outputs = list(outputs.values())
        if len(outputs) != len(self._out_features):
            raise RuntimeError(
                f"timm model {self.model_name!r} returned {len(outputs)} feature maps, "
                f"expected {len(self._out_features)}"
            )
        features: Dict[str, torch.Tensor] = {}
        for name, feat in zip(self._out_features, outputs):
            if self._channels_last_output:
                feat = feat.permute(0, 3, 1, 2).contiguous()  # [N, H, W, C] -> [N, C, H, W]
            if feat.dim() != 4 or feat.shape[1] != self._out_feature_channels[name]:
                raise RuntimeError(
                    f"timm model {self.model_name!r}: feature '{name}' has shape {tuple(feat.shape)}, expected "
                    f"[N, {self._out_feature_channels[name]}, H, W]"
                )
            features[name] = feat  # [N, C_i, H_i, W_i]
        return features
