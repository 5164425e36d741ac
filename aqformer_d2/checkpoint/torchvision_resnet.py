"""torchvision (or timm) ResNet state dict -> detectron2 ``ResNet`` names: pure functions of the state dict.

| torchvision                       | detectron2                        |
|-----------------------------------|-----------------------------------|
| ``conv1.weight``                  | ``stem.conv1.weight``             |
| ``bn1.{weight,bias,running_*}``   | ``stem.conv1.norm.*``             |
| ``layer{i}.{j}.conv{k}.weight``   | ``res{i+1}.{j}.conv{k}.weight``   |
| ``layer{i}.{j}.bn{k}.*``          | ``res{i+1}.{j}.conv{k}.norm.*``   |
| ``layer{i}.{j}.downsample.0.*``   | ``res{i+1}.{j}.shortcut.*``       |
| ``layer{i}.{j}.downsample.1.*``   | ``res{i+1}.{j}.shortcut.norm.*``  |
| ``fc.*``                          | dropped (classifier)              |
| ``*.num_batches_tracked``         | dropped (FrozenBN has none)       |

torchvision's ResNet-50 (v1.5) puts the stride in the 3x3 convolution: build the detectron2 ResNet with
``MODEL.RESNETS.STRIDE_IN_1X1 = False``, and feed RGB images normalised with ImageNet's mean/std in 0-255
units (``MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]``, ``MODEL.PIXEL_STD = [58.395, 57.12, 57.375]``,
``INPUT.FORMAT = "RGB"``).
"""
from __future__ import annotations

import logging
import os
import re
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from .loading import load_state_dict_file
from .state_dict_report import LoadReport, load_state_dict_with_report, to_tensor_state_dict

__all__ = ["convert_torchvision_resnet_state_dict", "load_torchvision_resnet"]

logger = logging.getLogger(__name__)

_BLOCK = r"layer(?P<stage>[1-4])\.(?P<block>\d+)\."
_BN = r"(?P<param>weight|bias|running_mean|running_var)"
# The table above: torchvision key pattern -> detectron2 name ({stage} is torchvision's layer index + 1).
_RULES = tuple((re.compile(pattern), name) for pattern, name in (
    (r"conv1\.weight", "stem.conv1.weight"),
    (rf"bn1\.{_BN}", "stem.conv1.norm.{param}"),
    (rf"{_BLOCK}conv(?P<k>\d)\.weight", "res{stage}.{block}.conv{k}.weight"),
    (rf"{_BLOCK}bn(?P<k>\d)\.{_BN}", "res{stage}.{block}.conv{k}.norm.{param}"),
    (rf"{_BLOCK}downsample\.0\.weight", "res{stage}.{block}.shortcut.weight"),
    (rf"{_BLOCK}downsample\.1\.{_BN}", "res{stage}.{block}.shortcut.norm.{param}"),
))
_DROPPED = re.compile(r"fc\.(weight|bias)|.*num_batches_tracked")


def _rename(key: str) -> Optional[str]:
    """detectron2 name of a torchvision key that is kept, None for a key that is not a torchvision ResNet key."""
    for pattern, name in _RULES:
        m = pattern.fullmatch(key)
        if m:
            groups = m.groupdict()
            if "stage" in groups:
                groups["stage"] = int(groups["stage"]) + 1
            return name.format(**groups)
    return None


def convert_torchvision_resnet_state_dict(
    state_dict: Mapping[str, torch.Tensor], *, prefix: str = "", source: str = "<state dict>"
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename a torchvision ResNet state dict to detectron2 ``ResNet`` (``build_resnet_backbone``) names.

    Args:
        state_dict: torchvision names (``conv1.weight``, ``layer1.0.conv1.weight`` ...).
        prefix: put before every detectron2 name: the ResNet's place in the model (``"backbone."`` in AQFormer).
        source: file name for messages.

    Returns:
        ``(converted, dropped)``: the detectron2-named tensors, and the torchvision keys left out (classifier
        ``fc.*`` and ``num_batches_tracked``).

    Raises:
        ValueError: a key is not a torchvision ResNet key, or ``conv1.weight`` is absent.
    """
    tensors = to_tensor_state_dict(state_dict, source)
    if "conv1.weight" not in tensors:
        raise ValueError(
            f"{source}: not a torchvision ResNet state dict (no 'conv1.weight'; first keys: {sorted(tensors)[:5]})"
        )
    converted: Dict[str, torch.Tensor] = {}
    dropped: List[str] = []
    unknown: List[str] = []
    for key, value in tensors.items():
        if _DROPPED.fullmatch(key):
            dropped.append(key)
        elif (new_key := _rename(key)) is None:
            unknown.append(key)
        else:
            converted[prefix + new_key] = value
    if unknown:
        raise ValueError(
            f"{source}: {len(unknown)} keys are not torchvision ResNet keys, e.g. {unknown[:5]} "
            "(expected conv1/bn1/layer{1-4}.{j}.{conv,bn}{k}/downsample/fc)"
        )
    logger.info("%s: converted %d torchvision ResNet keys, dropped %d (%s)", source, len(converted),
                len(dropped), ", ".join(sorted(k for k in dropped if not k.endswith("num_batches_tracked"))))
    return converted, dropped


def load_torchvision_resnet(
    resnet: nn.Module, path: Union[str, "os.PathLike[str]"], *, strict: bool = True
) -> LoadReport:
    """Load a local torchvision ResNet ``.pth`` / ``.safetensors`` into a detectron2 ``ResNet`` directly.

    For ``torchvision://resnet50`` pass ``aqformer_d2.checkpoint.local_weight_file("torchvision://resnet50")``.

    Args:
        resnet: a detectron2 ``ResNet`` (from ``build_resnet_backbone``).
        path: the torchvision state dict file.
        strict: raise :class:`~aqformer_d2.checkpoint.StateDictLoadError` if a backbone key is missing,
            mismatched or unexpected (e.g. stages the backbone does not build); nothing is loaded then.
    """
    source = os.fspath(path)
    converted, _ = convert_torchvision_resnet_state_dict(load_state_dict_file(source), source=source)
    return load_state_dict_with_report(resnet, converted, source=source, strict=strict)
