"""torchvision (or timm) ResNet state dict -> detectron2 ``ResNet`` names.

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

torchvision's ResNet-50 (v1.5) puts the stride in the 3x3 convolution: build the detectron2 ResNet
with ``MODEL.RESNETS.STRIDE_IN_1X1 = False``, and feed RGB images normalised with ImageNet's
mean/std in 0-255 units (``MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]``,
``MODEL.PIXEL_STD = [58.395, 57.12, 57.375]``, ``INPUT.FORMAT = "RGB"``).
"""
from __future__ import annotations

import logging
import re
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from .loading import load_state_dict_file
from .url_schemes import local_weight_file
from .state_dict_report import LoadReport, load_state_dict_with_report, to_tensor_state_dict

__all__ = [
    "convert_torchvision_resnet_state_dict",
    "load_torchvision_resnet",
    "torchvision_resnet_to_detectron2_checkpoint",
]

logger = logging.getLogger(__name__)

_BN_PARAMS = r"(weight|bias|running_mean|running_var)"
_STEM_CONV = re.compile(r"^conv1\.weight$")
_STEM_BN = re.compile(rf"^bn1\.{_BN_PARAMS}$")
_BLOCK_CONV = re.compile(r"^layer([1-4])\.(\d+)\.conv(\d)\.weight$")
_BLOCK_BN = re.compile(rf"^layer([1-4])\.(\d+)\.bn(\d)\.{_BN_PARAMS}$")
_SHORTCUT_CONV = re.compile(r"^layer([1-4])\.(\d+)\.downsample\.0\.weight$")
_SHORTCUT_BN = re.compile(rf"^layer([1-4])\.(\d+)\.downsample\.1\.{_BN_PARAMS}$")
_DROPPED = re.compile(r"^(fc\.(weight|bias)|.*num_batches_tracked)$")


def _rename(key: str) -> Optional[str]:
    """detectron2 name of a torchvision key, or None when the key is dropped."""
    if _DROPPED.match(key):
        return None
    if _STEM_CONV.match(key):
        return "stem.conv1.weight"
    m = _STEM_BN.match(key)
    if m:
        return f"stem.conv1.norm.{m.group(1)}"
    m = _BLOCK_CONV.match(key)
    if m:
        return f"res{int(m.group(1)) + 1}.{m.group(2)}.conv{m.group(3)}.weight"
    m = _BLOCK_BN.match(key)
    if m:
        return f"res{int(m.group(1)) + 1}.{m.group(2)}.conv{m.group(3)}.norm.{m.group(4)}"
    m = _SHORTCUT_CONV.match(key)
    if m:
        return f"res{int(m.group(1)) + 1}.{m.group(2)}.shortcut.weight"
    m = _SHORTCUT_BN.match(key)
    if m:
        return f"res{int(m.group(1)) + 1}.{m.group(2)}.shortcut.norm.{m.group(3)}"
    raise KeyError(key)


def convert_torchvision_resnet_state_dict(
    state_dict: Mapping[str, torch.Tensor], *, source: str = "<state dict>"
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename a torchvision ResNet state dict to detectron2 ``ResNet`` (``build_resnet_backbone``) names.

    Args:
        state_dict: torchvision names (``conv1.weight``, ``layer1.0.conv1.weight`` ...).
        source: file name for error messages.

    Returns:
        ``(converted, dropped)``: the detectron2-named tensors, and the torchvision keys left out
        (classifier ``fc.*`` and ``num_batches_tracked``).

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
        try:
            new_key = _rename(key)
        except KeyError:
            unknown.append(key)
            continue
        if new_key is None:
            dropped.append(key)
        else:
            converted[new_key] = value
    if unknown:
        raise ValueError(
            f"{source}: {len(unknown)} keys are not torchvision ResNet keys, e.g. {unknown[:5]} "
            "(expected conv1/bn1/layer{1-4}.{j}.{conv,bn}{k}/downsample/fc)"
        )
    logger.info("%s: converted %d torchvision ResNet keys, dropped %d (%s)", source, len(converted),
                len(dropped), ", ".join(sorted(k for k in dropped if not k.endswith("num_batches_tracked"))))
    return converted, dropped


def torchvision_resnet_to_detectron2_checkpoint(
    state_dict: Mapping[str, torch.Tensor], *, prefix: str = "backbone.", source: str = "<state dict>"
) -> Dict[str, object]:
    """A checkpoint dict that ``DetectionCheckpointer`` / ``AQCheckpointer`` loads without heuristics.

    Args:
        state_dict: torchvision ResNet state dict.
        prefix: attribute path of the ResNet inside the model (``"backbone."`` for AQFormer's meta-arch).
        source: file name for messages.

    Returns:
        ``{"model": {prefix + detectron2 name: tensor}, "__author__": "torchvision", "matching_heuristics": False}``
    """
    converted, _ = convert_torchvision_resnet_state_dict(state_dict, source=source)
    return {
        "model": {prefix + k: v.contiguous() for k, v in converted.items()},
        "__author__": "torchvision",
        "matching_heuristics": False,
    }


def load_torchvision_resnet(resnet: nn.Module, path: str, *, strict: bool = True) -> LoadReport:
    """Load a torchvision ResNet ``.pth`` / ``.safetensors`` into a detectron2 ``ResNet`` directly.

    Args:
        resnet: a detectron2 ``ResNet`` (from ``build_resnet_backbone``).
        path: the torchvision state dict file, or ``torchvision://resnet50`` (fetched into the cache).
        strict: raise :class:`~aqformer_d2.checkpoint.StateDictLoadError` if a backbone key is missing
            or mismatched (unexpected keys, e.g. stages the backbone does not build, are always errors
            in strict mode).

    Returns:
        the :class:`~aqformer_d2.checkpoint.LoadReport`.
    """
    local = local_weight_file(path)
    converted, _ = convert_torchvision_resnet_state_dict(load_state_dict_file(local), source=local)
    return load_state_dict_with_report(resnet, converted, source=local, strict=strict)
