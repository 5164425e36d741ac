"""timm classification checkpoint <-> timm ``features_only`` model names.

timm builds a ``features_only`` model by re-wrapping the classification model's modules: ``FeatureListNet`` /
``FeatureDictNet`` (ResNet, PVT-v2, ...) keep the top-level modules under their names, flatten ``nn.Sequential``
containers one level (``stages.0`` -> ``stages_0``) and drop the modules after the last requested level and
the classifier; ``FeatureGetterNet`` (ViT-style) keeps the pruned model under ``model.``; ``FeatureHookNet``
without re-writing keeps it under ``body.``. :func:`timm_feature_name_map` derives the mapping from the two
module trees, built on the ``meta`` device (:func:`create_timm_models`), so nothing is allocated.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from .state_dict_report import compare_state_dict

__all__ = [
    "TimmNameMap", "convert_timm_state_dict", "create_timm_classification_model", "create_timm_models",
    "timm_feature_name_map", "timm_model_state"
]

logger = logging.getLogger(__name__)

# Arguments that AQFormer decides itself and that callers must not pass as extra timm kwargs.
RESERVED_TIMM_KWARGS = ("pretrained", "features_only", "out_indices", "pretrained_cfg_overlay", "checkpoint_path")


class TimmNameMap:
    """Bidirectional renaming between a features_only model and its classification model.

    Args:
        child_map: features-model top-level child name -> dotted name in the classification model
            (e.g. ``{"stages_0": "stages.0"}``), used for FeatureList/Dict nets.
        wrapper_prefix: for wrapper nets, the features-model prefix that the classification names lack
            (``"model."`` / ``"body."``); ``child_map`` is then unused.
    """

    def __init__(self, child_map: Optional[Mapping[str, str]] = None, wrapper_prefix: str = ""):
        self.child_map = dict(child_map or {})
        self.wrapper_prefix = wrapper_prefix
        self._inverse = {v: k for k, v in self.child_map.items()}

    def to_classification(self, name: str) -> str:
        """features-model name (parameter, buffer or module) -> classification-model name."""
        if self.wrapper_prefix:
            if name == self.wrapper_prefix.rstrip("."):
                return ""
            if name.startswith(self.wrapper_prefix):
                return name[len(self.wrapper_prefix):]
            raise KeyError(name)
        if name == "":
            return ""
        head, _, rest = name.partition(".")
        if head not in self.child_map:
            raise KeyError(name)
        mapped = self.child_map[head]
        return f"{mapped}.{rest}" if rest else mapped

    def to_features(self, name: str) -> Optional[str]:
        """classification-model name -> features-model name, or None if the features model lacks it."""
        if self.wrapper_prefix:
            return self.wrapper_prefix + name
        # longest matching module prefix (``stages.0.blocks...`` before a hypothetical ``stages``)
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):
            prefix = ".".join(parts[:cut])
            if prefix in self._inverse:
                return ".".join([self._inverse[prefix]] + parts[cut:])
        return None


def create_timm_classification_model(
    name: str,
    *,
    out_indices: Optional[Sequence[int]] = None,
    in_chans: int = 3,
    device: str = "meta",
    extra_kwargs: Optional[Mapping[str, Any]] = None,
) -> nn.Module:
    """Build a timm classification model (never pretrained) and check ``out_indices`` against its levels.

    Args:
        name: timm model name (``timm.is_model(name)`` must hold).
        out_indices: feature levels a features model will request (None: no check).
        in_chans: input channels.
        device: ``"meta"`` builds shapes only (no memory), for key mapping and conversion.
        extra_kwargs: further ``timm.create_model`` kwargs (e.g. ``drop_path_rate``).

    Raises:
        ValueError: unknown model name, out-of-range ``out_indices``, or a reserved kwarg in ``extra_kwargs``.
    """
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:10]
        raise ValueError(f"timm has no model named {name!r} (similar names: {close})")
    kwargs = dict(extra_kwargs or {})
    reserved = sorted(set(kwargs) & set(RESERVED_TIMM_KWARGS))
    if reserved:
        raise ValueError(f"timm kwargs {reserved} are set by AQFormer itself and may not be overridden")
    with torch.device(device):
        classification = timm.create_model(name, pretrained=False, in_chans=in_chans, **kwargs)
    num_levels = len(classification.feature_info)
    bad = [int(i) for i in out_indices or () if not 0 <= int(i) < num_levels]
    if bad:
        raise ValueError(
            f"timm model {name!r} has {num_levels} feature levels (indices 0..{num_levels - 1}); "
            f"out_indices {list(out_indices)} contains {bad}"
        )
    return classification


def create_timm_models(
    name: str, *, out_indices: Optional[Sequence[int]] = None, in_chans: int = 3, device: str = "meta",
    extra_kwargs: Optional[Mapping[str, Any]] = None,
) -> Tuple[nn.Module, nn.Module]:
    """``(features_only model, classification model)`` of a timm architecture, never pretrained; arguments as
    for :func:`create_timm_classification_model` (``out_indices`` None: every level)."""
    import timm

    classification = create_timm_classification_model(
        name, out_indices=out_indices, in_chans=in_chans, device=device, extra_kwargs=extra_kwargs
    )
    indices = tuple(int(i) for i in (range(len(classification.feature_info)) if out_indices is None else out_indices))
    with torch.device(device):
        features = timm.create_model(name, pretrained=False, features_only=True, out_indices=indices,
                                     in_chans=in_chans, **dict(extra_kwargs or {}))
    return features, classification


def _child_map_candidates(classification: nn.Module) -> Dict[str, str]:
    """Names a features net may give the classification model's top-level modules."""
    mapping: Dict[str, str] = {}
    for name, module in classification.named_children():
        mapping[name] = name
        if isinstance(module, nn.Sequential):
            for child_name, _ in module.named_children():
                mapping[f"{name}_{child_name}"] = f"{name}.{child_name}"
    return mapping


def timm_feature_name_map(features: nn.Module, classification: nn.Module) -> TimmNameMap:
    """Derive how ``features`` (timm ``features_only``) renamed the modules of ``classification``.

    Tries, in order: top-level children kept or flattened (FeatureList/Dict/Hook nets with re-writing),
    then a single wrapper child (``model.`` / ``body.``). The map is accepted only if every key of
    ``features.state_dict()`` names a key of ``classification.state_dict()`` with the same shape.

    Raises:
        ValueError: no consistent mapping (the message lists unmatched keys).
    """
    feature_state = features.state_dict()
    class_state = classification.state_dict()
    candidates: List[TimmNameMap] = []
    known = _child_map_candidates(classification)
    children = [n for n, _ in features.named_children()]
    if all(c in known for c in children):
        candidates.append(TimmNameMap(child_map={c: known[c] for c in children}))
    if len(children) == 1:
        candidates.append(TimmNameMap(wrapper_prefix=children[0] + "."))
    unmatched: List[str] = []
    for candidate in candidates:
        unmatched = []
        for key, value in feature_state.items():
            try:
                class_key = candidate.to_classification(key)
            except KeyError:
                unmatched.append(key)
                continue
            if class_key not in class_state or tuple(class_state[class_key].shape) != tuple(value.shape):
                unmatched.append(key)
        if not unmatched:
            return candidate
    raise ValueError(
        f"cannot relate the features_only model's keys to the classification model "
        f"{type(classification).__name__}: children {children}; unmatched keys e.g. {unmatched[:5]}"
    )


def convert_timm_state_dict(
    state_dict: Mapping[str, torch.Tensor], name_map: TimmNameMap, features_keys: Iterable[str]
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename a timm classification state dict for the features model (``features_keys``) with ``name_map``.

    Keys already in features-model naming (e.g. saved from a features model) are kept as they are.

    Returns:
        ``(renamed, leftover)``: the checkpoint keys of the features model under its names, and the other
        checkpoint keys (classifier head, final norm, stages beyond the last requested level) as they were.

    Raises:
        ValueError: two checkpoint keys land on the same features key.
    """
    wanted = set(features_keys)
    renamed: Dict[str, torch.Tensor] = {}
    origin: Dict[str, str] = {}
    leftover: List[str] = []
    for key, value in state_dict.items():
        target = key if key in wanted else name_map.to_features(key)
        if target is None or target not in wanted:
            leftover.append(key)
            continue
        if target in renamed:
            raise ValueError(f"checkpoint keys '{origin[target]}' and '{key}' both map to '{target}'")
        renamed[target] = value
        origin[target] = key
    return renamed, leftover


def timm_model_state(
    state_dict: Mapping[str, torch.Tensor],
    model_name: str,
    *,
    prefix: str = "backbone.body.",
    out_indices: Optional[Sequence[int]] = None,
    in_chans: int = 3,
    require_all: bool = True,
    source: str = "<state dict>",
) -> Dict[str, torch.Tensor]:
    """A timm checkpoint under the features model's names, with ``prefix`` (its place in the whole model).

    Args:
        state_dict: timm classification (or features) state dict.
        model_name: timm architecture the checkpoint belongs to (built on the meta device, for the names).
        prefix: where the features model sits inside the model (``AQTimmBackbone``: ``"backbone.body."``).
        out_indices: levels to keep; None = every level, which suits any ``OUT_INDICES``.
        in_chans: input channels of the architecture.
        require_all: raise if a features-model key is missing from the checkpoint (else warn).
        source: file name for messages.

    Raises:
        ValueError: missing features keys (with ``require_all``) or shape mismatches.
    """
    features, classification = create_timm_models(model_name, out_indices=out_indices, in_chans=in_chans)
    renamed, leftover = convert_timm_state_dict(
        state_dict, timm_feature_name_map(features, classification), features.state_dict().keys()
    )
    report = compare_state_dict(features, renamed, source=source)
    if report.mismatched:
        raise ValueError(f"{source}: shape mismatches (key, checkpoint, model): {list(report.mismatched[:5])}")
    if report.missing:
        message = (
            f"{source}: {len(report.missing)} keys of timm {model_name!r} (features_only) are missing from the "
            f"checkpoint, e.g. {list(report.missing[:5])}"
        )
        if require_all:
            raise ValueError(f"{message}; is it a {model_name} checkpoint?")
        logger.warning("%s (written anyway; they keep their initialisation): %s", message, ", ".join(report.missing))
    if leftover:
        logger.info("%s: %d keys not used by the features model (ignored): %s", source, len(leftover),
                    ", ".join(leftover[:20]) + (" ..." if len(leftover) > 20 else ""))
    return {prefix + k: v.contiguous() for k, v in renamed.items()}
