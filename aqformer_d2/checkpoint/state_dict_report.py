"""Load a state dict into a module and report what did not match, as a readable table.

:func:`load_state_dict_with_report` compares the checkpoint with ``module.state_dict()`` *before* loading
(:class:`LoadReport`: missing, unexpected and shape-mismatched keys), so that strict mode can refuse a
checkpoint, with the table, without touching the module.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Tuple

import numpy as np
import torch
from tabulate import tabulate
from torch import nn

__all__ = [
    "LoadReport", "StateDictLoadError", "compare_state_dict", "load_state_dict_with_report", "to_tensor_state_dict"
]

logger = logging.getLogger(__name__)

# BatchNorm's step counter: absent from many published checkpoints and irrelevant to the weights.
_IGNORABLE_MISSING_SUFFIXES: Tuple[str, ...] = ("num_batches_tracked",)


class StateDictLoadError(RuntimeError):
    """A checkpoint did not fit a module (strict loading). ``report`` holds the details."""

    def __init__(self, message: str, report: "LoadReport"):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class LoadReport:
    """Outcome of comparing (and possibly loading) a checkpoint against a module.

    Attributes:
        source: where the state dict came from (a file name), used in messages.
        target: what it was loaded into (a class or module name), used in messages.
        loaded: keys copied into the module.
        missing: module keys absent from the checkpoint (BatchNorm ``num_batches_tracked`` excluded).
        unexpected: checkpoint keys the module does not have.
        mismatched: ``(key, checkpoint shape, module shape)`` for keys whose shapes differ.
        ignore_unexpected: whether unexpected keys were accepted (listed as "ignored").
    """

    source: str
    target: str
    loaded: Tuple[str, ...]
    missing: Tuple[str, ...]
    unexpected: Tuple[str, ...]
    mismatched: Tuple[Tuple[str, Tuple[int, ...], Tuple[int, ...]], ...]
    ignore_unexpected: bool = False

    @property
    def has_errors(self) -> bool:
        """Whether strict loading would fail."""
        return bool(self.missing or self.mismatched or (self.unexpected and not self.ignore_unexpected))

    def table(self) -> str:
        """One row per key that did not load cleanly: status, key, checkpoint shape, module shape."""
        status = "unexpected (ignored)" if self.ignore_unexpected else "unexpected"
        rows = [("shape mismatch", key, tuple(ckpt), tuple(model)) for key, ckpt, model in self.mismatched]
        rows += [("missing in checkpoint", key, "-", "") for key in self.missing]
        rows += [(status, key, "", "-") for key in self.unexpected]
        if not rows:
            return f"all {len(self.loaded)} keys of {self.source} loaded into {self.target}"
        return tabulate(rows, headers=["status", "key", "checkpoint shape", "module shape"], tablefmt="pipe")

    def summary(self) -> str:
        return (
            f"{self.source} -> {self.target}: {len(self.loaded)} loaded, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected{' (ignored)' if self.ignore_unexpected else ''}, "
            f"{len(self.mismatched)} shape-mismatched"
        )


def to_tensor_state_dict(state_dict: Mapping[str, Any], source: str = "<state dict>") -> Dict[str, torch.Tensor]:
    """Copy a mapping of tensors / numpy arrays into a ``{str: torch.Tensor}`` dict.

    Raises:
        TypeError: a key is not a string or a value is neither a tensor nor a numpy array.
    """
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"{source}: state dict key {key!r} is not a string")
        if isinstance(value, torch.Tensor):
            out[key] = value
        elif isinstance(value, np.ndarray):
            out[key] = torch.from_numpy(np.ascontiguousarray(value))
        else:
            raise TypeError(f"{source}: value of '{key}' is a {type(value).__name__}, expected a tensor or numpy array")
    return out


def compare_state_dict(
    module: nn.Module, state_dict: Mapping[str, Any], *, source: str = "<state dict>", ignore_unexpected: bool = False
) -> LoadReport:
    """Compare ``state_dict`` with ``module.state_dict()`` without loading anything."""
    tensors = to_tensor_state_dict(state_dict, source)
    model_state = module.state_dict()
    loaded, mismatched = [], []
    for key, value in model_state.items():
        if key not in tensors:
            continue
        if isinstance(value, nn.parameter.UninitializedParameter) or tuple(value.shape) == tuple(tensors[key].shape):
            loaded.append(key)
        else:
            mismatched.append((key, tuple(tensors[key].shape), tuple(value.shape)))
    missing = [k for k in model_state if k not in tensors and not k.endswith(_IGNORABLE_MISSING_SUFFIXES)]
    unexpected = [k for k in tensors if k not in model_state]
    return LoadReport(source, type(module).__name__, tuple(loaded), tuple(missing), tuple(unexpected),
                      tuple(mismatched), ignore_unexpected)


def load_state_dict_with_report(
    module: nn.Module,
    state_dict: Mapping[str, Any],
    *,
    source: str = "<state dict>",
    strict: bool = False,
    ignore_unexpected: bool = False,
    log: bool = True,
) -> LoadReport:
    """Load ``state_dict`` into ``module`` and report missing / unexpected / shape-mismatched keys.

    Args:
        module: the module to fill.
        state_dict: key -> torch.Tensor or numpy array, keyed like ``module.state_dict()``.
        source: name of the checkpoint (file path) for messages.
        strict: raise :class:`StateDictLoadError` (with the table, before loading anything) when a
            key is missing, mismatched, or unexpected (unless ``ignore_unexpected``).
        ignore_unexpected: unexpected keys (e.g. a classifier head) are listed as ignored, never an error.
        log: log the summary (INFO) and the table (WARNING when something did not match).

    Returns:
        :class:`LoadReport`. Shape-mismatched keys are never loaded; the module keeps its values there.
    """
    report = compare_state_dict(module, state_dict, source=source, ignore_unexpected=ignore_unexpected)
    if strict and report.has_errors:
        message = f"Cannot load {source} into {report.target}: {report.summary()}\n{report.table()}"
        raise StateDictLoadError(message, report)
    tensors = to_tensor_state_dict(state_dict, source)
    module.load_state_dict({k: tensors[k] for k in report.loaded}, strict=False)
    if log:
        logger.info(report.summary())
        if report.missing or report.mismatched or report.unexpected:
            level = logging.WARNING if report.has_errors else logging.INFO
            logger.log(level, "Keys of %s that did not load into %s:\n%s", source, report.target, report.table())
    return report
