"""Read weight files from local paths without executing code from them; every error names the file.

* ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` / ``.pyth``: ``torch.load(weights_only=True)``, numpy arrays allowed;
* ``.safetensors``: ``safetensors.torch.load_file``;
* ``.pkl``: :func:`aqformer_d2.utils.safe_pickle.load_pickle_restricted`.

Arbitrary pickled objects (plain pickle, ``weights_only=False``) only with ``trust_pickle=True``.
"""
from __future__ import annotations

import logging
import os
import pickle
from typing import Any, Dict, Mapping, Union

import numpy as np
import torch

from aqformer_d2.utils.safe_pickle import UnsafePickleError, load_pickle_restricted

from .state_dict_report import to_tensor_state_dict

__all__ = ["CheckpointFormatError", "extract_state_dict", "load_checkpoint_file", "load_state_dict_file"]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pyth")
SAFETENSORS_SUFFIX = ".safetensors"
PICKLE_SUFFIX = ".pkl"

# Containers under which training scripts nest the weights (timm: "state_dict"/"state_dict_ema",
# detectron2/fvcore: "model", pycls: "model_state", DeiT/PVT releases: "model").
_NESTED_STATE_DICT_KEYS = ("state_dict", "model", "model_state", "module")

# numpy's array reconstruction, allowed inside torch.load(weights_only=True): some released weight files
# (e.g. torchvggish's PCA parameters) store numpy arrays. No other global is added.
_NUMPY_SAFE_GLOBALS = [
    np.ndarray,
    np.dtype,
    np._core.multiarray._reconstruct,
    (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
    type(np.dtype(np.float32)),
    type(np.dtype(np.float64)),
]


class CheckpointFormatError(ValueError):
    """A weight file could be read but does not hold what was expected (the message names the file)."""


def _is_weights(obj: Any) -> bool:
    """A non-empty mapping whose values are all tensors or numpy arrays."""
    arrays = (torch.Tensor, np.ndarray)
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, arrays) for v in obj.values())


def load_checkpoint_file(path: PathLike, *, trust_pickle: bool = False) -> Any:
    """Read a weight file by its suffix and return the stored object unchanged.

    Args:
        path: local file (.pth/.pt/.bin/.ckpt/.pyth, .safetensors or .pkl).
        trust_pickle: allow arbitrary pickled objects. Only for files you created yourself.

    Raises:
        FileNotFoundError: no such file.
        CheckpointFormatError: unknown suffix, or the file cannot be read in the safe mode.
        aqformer_d2.utils.safe_pickle.UnsafePickleError: a .pkl names a disallowed global.
    """
    path_str = os.fspath(path)
    if not os.path.isfile(path_str):
        raise FileNotFoundError(f"{path_str}: checkpoint file not found")
    lower = path_str.lower()
    if lower.endswith(SAFETENSORS_SUFFIX):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path_str, device="cpu")
        except SafetensorError as e:
            raise CheckpointFormatError(f"{path_str}: not a valid .safetensors file ({e})") from e
    if lower.endswith(PICKLE_SUFFIX):
        if not trust_pickle:
            return load_pickle_restricted(path_str)
        logger.warning("Loading %s with plain pickle (trust_pickle=True): it can run code.", path_str)
        with open(path_str, "rb") as f:
            return pickle.load(f, encoding="latin1")
    if not lower.endswith(TORCH_SUFFIXES):
        raise CheckpointFormatError(
            f"{path_str}: unknown checkpoint suffix; expected one of "
            f"{', '.join(TORCH_SUFFIXES + (SAFETENSORS_SUFFIX, PICKLE_SUFFIX))}"
        )
    try:
        with torch.serialization.safe_globals(_NUMPY_SAFE_GLOBALS):
            return torch.load(path_str, map_location="cpu", weights_only=not trust_pickle)
    except UnsafePickleError:
        raise
    except pickle.UnpicklingError as e:
        raise CheckpointFormatError(
            f"{path_str}: torch.load(weights_only=True) could not read this file: it is corrupt, not a torch "
            "checkpoint, or stores objects besides tensors and plain containers. Re-save its state dict, or "
            f"pass trust_pickle=True if you created the file yourself. torch says: {e}"
        ) from e
    except (RuntimeError, EOFError, IndexError, KeyError, ValueError, TypeError, AttributeError) as e:
        # what torch's unpicklers raise on corrupt or foreign bytes
        raise CheckpointFormatError(f"{path_str}: corrupt or not a torch checkpoint ({type(e).__name__}: {e})") from e


def extract_state_dict(obj: Any, *, source: str = "<checkpoint>") -> Dict[str, torch.Tensor]:
    """Find the ``{name: tensor}`` mapping in a loaded checkpoint.

    Accepts a flat mapping of tensors/arrays, or one nested (once) under ``state_dict`` / ``model`` /
    ``model_state`` / ``module``. A leading ``module.`` (DataParallel) is stripped when every key has it.

    Raises:
        CheckpointFormatError: no state dict found; the message lists the top-level keys.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(f"{source}: expected a dict of tensors (a state dict), got {type(obj).__name__}")
    nested = (obj[k] for k in _NESTED_STATE_DICT_KEYS if _is_weights(obj.get(k)))
    state = obj if _is_weights(obj) else next(nested, None)
    if state is None:
        raise CheckpointFormatError(
            f"{source}: no state dict found: the file's top-level keys {sorted(str(k) for k in obj)[:10]} are not "
            f"all tensors and none of {list(_NESTED_STATE_DICT_KEYS)} holds a dict of tensors"
        )
    tensors = to_tensor_state_dict(state, source)
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def load_state_dict_file(path: PathLike, *, trust_pickle: bool = False) -> Dict[str, torch.Tensor]:
    """:func:`load_checkpoint_file` followed by :func:`extract_state_dict`: a ``{name: tensor}`` dict."""
    return extract_state_dict(load_checkpoint_file(path, trust_pickle=trust_pickle), source=os.fspath(path))
