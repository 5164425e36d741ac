"""Restricted unpickling of files that should only hold tensors, arrays and plain containers.

Two kinds of pickle files reach this project from outside:

* AVSBench's ``audio_log_mel/*.pkl``: ``pickle.dump(tensor [5, 1, 96, 64], f)`` of a torch tensor;
* detectron2 / Detectron model-zoo ``.pkl`` weights (e.g. ``ImageNetPretrained/MSRA/R-50.pkl``):
  a (Python 2) pickle of ``{name: numpy array}``, possibly nested under ``"model"`` or ``"blobs"``.

Plain ``pickle.load`` executes whatever callable a file names, so a downloaded file could run
``os.system``. :func:`load_pickle_restricted` resolves only an allow-list of globals that rebuild
tensors, numpy arrays and containers, and raises :class:`UnsafePickleError` for anything else.

Torch tensors pickled with ``pickle`` (not ``torch.save``) store their data through
``torch.storage._load_from_bytes``, which calls ``torch.load(weights_only=False)`` on embedded
bytes. That function is never resolved here: it is replaced by a loader that reads the embedded
bytes with ``torch.load(weights_only=True)`` onto the CPU.
"""
from __future__ import annotations

import _compat_pickle
import importlib
import io
import logging
import os
import pickle
from typing import Any, Dict, FrozenSet, Tuple, Union

import torch

__all__ = [
    "ALLOWED_GLOBALS",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "allowed_global_names",
    "load_pickle_restricted",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle file named a global outside the allow-list (e.g. ``os.system``).

    Attributes:
        path: the file being read.
        global_name: ``"module.name"`` of the refused global.
    """

    def __init__(self, path: str, global_name: str):
        self.path = path
        self.global_name = global_name
        super().__init__(
            f"{path}: refused to unpickle global '{global_name}'. Only tensors, numpy arrays and plain "
            "containers may be loaded from a .pkl file here; a pickle that names other callables can run "
            "arbitrary code. If you created this file yourself and trust it, load it with plain pickle "
            "(AQCheckpointer(..., trust_pickle=True) for checkpoints)."
        )


def _load_storage_from_bytes_weights_only(data: bytes):
    """Safe replacement for ``torch.storage._load_from_bytes`` (which uses ``weights_only=False``)."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


# (module, name) pairs that may be resolved. Values: None = import the real object; a callable =
# use this replacement instead. numpy 1.x spells its core package ``numpy.core``, numpy 2.x ``numpy._core``.
_NUMPY_CORE_GLOBALS: Tuple[Tuple[str, str], ...] = (
    ("multiarray", "_reconstruct"),
    ("multiarray", "scalar"),
    ("numeric", "_frombuffer"),
)

ALLOWED_GLOBALS: Dict[Tuple[str, str], Any] = {
    # numpy arrays, dtypes, scalars
    ("numpy", "ndarray"): None,
    ("numpy", "dtype"): None,
    **{(f"numpy.core.{mod}", name): None for mod, name in _NUMPY_CORE_GLOBALS},
    **{(f"numpy._core.{mod}", name): None for mod, name in _NUMPY_CORE_GLOBALS},
    # protocol-2 pickles encode bytes as ``_codecs.encode(str, 'latin1')``
    ("_codecs", "encode"): None,
    # torch tensors pickled with ``pickle``
    ("torch._utils", "_rebuild_tensor"): None,
    ("torch._utils", "_rebuild_tensor_v2"): None,
    ("torch._utils", "_rebuild_parameter"): None,
    ("torch._utils", "_rebuild_parameter_with_state"): None,
    ("torch._utils", "_rebuild_from_type_v2"): None,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes_weights_only,
    ("torch", "Tensor"): None,
    ("torch", "Size"): None,
    ("torch", "device"): None,
    ("torch.nn.parameter", "Parameter"): None,
    # plain containers and value types
    ("collections", "OrderedDict"): None,
    ("builtins", "set"): None,
    ("builtins", "frozenset"): None,
    ("builtins", "complex"): None,
    ("builtins", "slice"): None,
    ("builtins", "bytearray"): None,
    ("builtins", "range"): None,
}

# numpy-1 numpy.core modules resolve to numpy-2 numpy._core when available (avoids the deprecated shim).
_NUMPY_CORE_ALIASES: Dict[str, str] = {f"numpy.core.{mod}": f"numpy._core.{mod}" for mod, _ in _NUMPY_CORE_GLOBALS}


def _is_torch_dtype(module: str, name: str) -> bool:
    """``torch.float32`` and friends are pickled as the global ``torch.<dtype name>``."""
    return module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)


def _import_global(module: str, name: str) -> Any:
    if module in _NUMPY_CORE_ALIASES:
        try:
            return getattr(importlib.import_module(_NUMPY_CORE_ALIASES[module]), name)
        except ImportError:
            # numpy 1.x: numpy._core does not exist, the original numpy.core name is the right one.
            pass
    return getattr(importlib.import_module(module), name)


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose :meth:`find_class` resolves only :data:`ALLOWED_GLOBALS` and torch dtypes.

    Args:
        file: binary file object to read.
        path: file name used in error messages.
        encoding: how Python 2 ``str`` objects are decoded ("latin1" is what numpy arrays need).
    """

    def __init__(self, file, *, path: str = "<stream>", encoding: str = "latin1"):
        super().__init__(file, encoding=encoding, fix_imports=True)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (``__builtin__``, ``copy_reg`` ...) as the stock find_class would map them.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        key = (module, name)
        if key in ALLOWED_GLOBALS:
            replacement = ALLOWED_GLOBALS[key]
            return replacement if replacement is not None else _import_global(module, name)
        if _is_torch_dtype(module, name):
            return getattr(torch, name)
        raise UnsafePickleError(self._path, f"{module}.{name}")


def load_pickle_restricted(path: PathLike, *, encoding: str = "latin1") -> Any:
    """Load a pickle file that may only contain tensors, numpy arrays and plain containers.

    Args:
        path: the ``.pkl`` file.
        encoding: decoding of Python 2 ``str`` objects ("latin1" for numpy data written by Python 2).

    Returns:
        The unpickled object (e.g. a ``torch.Tensor`` or a dict of numpy arrays).

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafePickleError: the file names a global outside the allow-list (nothing it names is called).
        pickle.UnpicklingError: the file is truncated or not a pickle; the message names the file.
    """
    path_str = os.fspath(path)
    if not os.path.isfile(path_str):
        raise FileNotFoundError(f"{path_str}: pickle file not found")
    with open(path_str, "rb") as f:
        try:
            return RestrictedUnpickler(f, path=path_str, encoding=encoding).load()
        except UnsafePickleError:
            raise
        except EOFError as e:
            raise pickle.UnpicklingError(f"{path_str}: truncated or empty pickle file ({e})") from e
        except pickle.UnpicklingError as e:
            raise pickle.UnpicklingError(f"{path_str}: not a readable pickle file ({e})") from e


def allowed_global_names() -> FrozenSet[str]:
    """The ``"module.name"`` globals :class:`RestrictedUnpickler` resolves (torch dtypes besides)."""
    return frozenset(f"{m}.{n}" for m, n in ALLOWED_GLOBALS)

