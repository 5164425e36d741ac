"""The backbone of a detectron2-format COCO checkpoint (§4.2: "ResNet-50 pretrained on MSCOCO").

COCO-trained detectron2 models hold the whole detector; only their backbone is wanted here. Two layouts:

| layout          | backbone keys in the checkpoint            | examples                                         |
|-----------------|--------------------------------------------|--------------------------------------------------|
| ``mask2former`` | ``backbone.stem.*``, ``backbone.res2.*``   | Mask2Former's COCO R50 models (model_final_*.pkl) |
| ``fpn``         | ``backbone.bottom_up.stem.*``, ``...res2`` | detectron2's R50-FPN models (Mask / Faster R-CNN) |

The layout is the one under whose prefix most of the target backbone's keys exist; all other keys (heads,
FPN, ``sem_seg_head``) are skipped and reported in one log line. Loading into a built backbone
(:func:`load_coco_backbone`) is strict: a ResNet-101 checkpoint for a ResNet-50 is an error, not a partial
load. The file does not record the input conventions the backbone was trained with (channel order,
normalisation, ``STRIDE_IN_1X1``); see docs/coco_backbone.md.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Iterable, Mapping, Tuple, Union

import torch
from torch import nn

from .loading import CheckpointFormatError, load_state_dict_file
from .state_dict_report import LoadReport, StateDictLoadError, load_state_dict_with_report

__all__ = [
    "COCO_BACKBONE_LAYOUTS", "CocoBackbone", "coco_backbone_model_state", "load_coco_backbone", "select_coco_backbone",
]

logger = logging.getLogger(__name__)

# Layout name -> prefix of the backbone's keys in the checkpoint. Longest prefix first: an FPN model's
# ResNet keys also start with "backbone.".
COCO_BACKBONE_LAYOUTS: Dict[str, str] = {"fpn": "backbone.bottom_up.", "mask2former": "backbone."}
# First name of every parameter of detectron2's ResNet: the backbone keys when no backbone is built.
_RESNET_TOP_LEVEL = ("stem", "res2", "res3", "res4", "res5")
_BN_STEP_COUNTER = "num_batches_tracked"
_MAX_GROUPS_IN_SUMMARY = 8


@dataclass(frozen=True)
class CocoBackbone:
    """The backbone part of a COCO checkpoint.

    Attributes:
        source: the file (for messages).
        layout: a key of :data:`COCO_BACKBONE_LAYOUTS`.
        state_dict: backbone tensors under the backbone's own names (``res2.0.conv1.weight`` ...).
        skipped: checkpoint keys left out (heads, FPN, BatchNorm step counters the backbone lacks).
    """

    source: str
    layout: str
    state_dict: Dict[str, torch.Tensor]
    skipped: Tuple[str, ...]

    @property
    def prefix(self) -> str:
        return COCO_BACKBONE_LAYOUTS[self.layout]

    def summary(self) -> str:
        """One line: layout, how many tensors were taken, and the skipped keys counted by group
        (``roi_heads``, ``backbone.fpn_lateral2`` ...)."""
        groups = Counter(
            ".".join(key.split(".")[:2]) if key.startswith("backbone.") and key.count(".") > 1 else key.split(".")[0]
            for key in self.skipped
        )
        shown = ", ".join(f"{name} ({n})" for name, n in sorted(groups.items())[:_MAX_GROUPS_IN_SUMMARY])
        if len(groups) > _MAX_GROUPS_IN_SUMMARY:
            shown += f", ... {len(groups) - _MAX_GROUPS_IN_SUMMARY} more groups"
        return (
            f"{self.source}: {len(self.state_dict)} backbone tensors under '{self.prefix}' ({self.layout} layout); "
            f"skipped {len(self.skipped)} other keys" + (f": {shown}" if self.skipped else "")
        )


def select_coco_backbone(
    state_dict: Mapping[str, torch.Tensor], backbone_keys: Iterable[str], *, source: str = "<checkpoint>",
    only_backbone_keys: bool = False,
) -> CocoBackbone:
    """Pick the backbone tensors of a COCO detector / segmenter state dict.

    Args:
        state_dict: the checkpoint's model state dict (``backbone.bottom_up.res2...`` or ``backbone.res2...``).
        backbone_keys: the target backbone's own ``state_dict()`` keys.
        source: file name for messages.
        only_backbone_keys: skip keys under the layout's prefix that are not in ``backbone_keys`` too (by
            default they are kept, so that strict loading reports them).

    Returns:
        :class:`CocoBackbone`; its ``state_dict`` may still lack backbone keys (checked when loading).

    Raises:
        CheckpointFormatError: no key of the backbone appears under either layout's prefix.
    """
    wanted = set(backbone_keys)
    counts = {
        layout: sum(1 for key in state_dict if key.startswith(prefix) and key[len(prefix):] in wanted)
        for layout, prefix in COCO_BACKBONE_LAYOUTS.items()
    }
    layout = max(COCO_BACKBONE_LAYOUTS, key=lambda name: counts[name])  # ties: the first (longest prefix)
    if counts[layout] == 0:
        example = sorted(wanted)[0] if wanted else "res2.0.conv1.weight"
        raise CheckpointFormatError(
            f"{source}: no backbone key found. Expected keys such as "
            + " or ".join(f"'{prefix}{example}' ({name} layout)" for name, prefix in COCO_BACKBONE_LAYOUTS.items())
            + f"; the file's first keys are {sorted(state_dict)[:8]}. Is it a detectron2-format model with a "
            "ResNet backbone of the configured depth?"
        )
    prefix = COCO_BACKBONE_LAYOUTS[layout]
    selected: Dict[str, torch.Tensor] = {}
    skipped = []
    for key, value in state_dict.items():
        name = key[len(prefix):]
        keep_other = not only_backbone_keys and not name.endswith(_BN_STEP_COUNTER)
        if key.startswith(prefix) and (name in wanted or keep_other):
            selected[name] = value
        else:
            skipped.append(key)
    return CocoBackbone(source=source, layout=layout, state_dict=selected, skipped=tuple(skipped))


def load_coco_backbone(
    backbone: nn.Module, path: Union[str, "os.PathLike[str]"], *, trust_pickle: bool = False
) -> Tuple[CocoBackbone, LoadReport]:
    """Load the backbone of a COCO checkpoint file into ``backbone`` (e.g. detectron2's ``ResNet``), strictly.

    Logs one INFO line (:meth:`CocoBackbone.summary`).

    Args:
        backbone: the module to fill; its ``state_dict()`` keys are the targets.
        path: ``.pkl`` / ``.pth`` / ``.safetensors`` checkpoint.
        trust_pickle: read a ``.pkl`` with plain pickle (only for files you created yourself).

    Raises:
        FileNotFoundError: no such file.
        CheckpointFormatError: no backbone key in the file, or no state dict in it.
        StateDictLoadError: a backbone key is missing or has another shape, or the checkpoint's backbone has
            keys this backbone lacks (e.g. another depth); nothing is loaded then.
        aqformer_d2.utils.safe_pickle.UnsafePickleError: a ``.pkl`` names a global outside the allow-list.
    """
    source = os.fspath(path)
    selection = select_coco_backbone(
        load_state_dict_file(source, trust_pickle=trust_pickle), backbone.state_dict().keys(), source=source
    )
    try:
        report = load_state_dict_with_report(backbone, selection.state_dict, source=source, strict=True, log=False)
    except StateDictLoadError as e:
        raise StateDictLoadError(
            f"{source}: the backbone under '{selection.prefix}' ({selection.layout} layout) does not fit "
            f"{type(backbone).__name__} as configured (depth, widths, norm): {e}",
            e.report,
        ) from e
    logger.info(selection.summary())
    return selection, report


def coco_backbone_model_state(
    state_dict: Mapping[str, torch.Tensor], *, prefix: str = "backbone.", source: str = "<checkpoint>"
) -> Dict[str, torch.Tensor]:
    """The ResNet backbone of a COCO checkpoint, under ``prefix`` (its place in the whole model).

    For when no backbone is built (``MODEL.WEIGHTS mask2former://...`` / ``detectron2://...``): the backbone
    keys are the checkpoint's own ``stem.*`` / ``res2.*`` ... ``res5.*`` keys under either layout's prefix;
    the checkpointer checks their shapes against the model. Logs :meth:`CocoBackbone.summary`.

    Raises:
        CheckpointFormatError: no ResNet key under either layout's prefix.
    """
    names = {
        key[len(p):] for key in state_dict for p in COCO_BACKBONE_LAYOUTS.values()
        if key.startswith(p) and key[len(p):].split(".")[0] in _RESNET_TOP_LEVEL
    }
    selection = select_coco_backbone(state_dict, names, source=source, only_backbone_keys=True)
    logger.info(selection.summary())
    return {prefix + k: torch.as_tensor(v) for k, v in selection.state_dict.items()}
