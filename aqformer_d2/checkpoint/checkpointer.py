"""detectron2 ``DetectionCheckpointer`` that never runs code from a weight file.

Differences from ``DetectionCheckpointer._load_file``:

* ``.pkl`` (detectron2 / Detectron model zoo, e.g. ``R-50.pkl``) goes through the restricted
  unpickler instead of ``pickle.load``; plain pickle only with ``trust_pickle=True``;
* ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` use ``torch.load(weights_only=True)``;
* ``.safetensors`` files are read with safetensors;
* a missing file or an unreadable one raises an error naming the file;
* checkpoints and the ``last_checkpoint`` tag are written atomically (:func:`atomic_write`): a
  process killed while saving leaves the previous checkpoint tagged and intact, never a half-written
  file under a checkpoint's name.

The conversion of Caffe2 names (``res2_0_branch2a_w`` ...) is detectron2's own, enabled by returning
``matching_heuristics=True`` exactly where ``DetectionCheckpointer`` does.
"""
from __future__ import annotations

import logging
import os
from typing import IO, Any, Callable, Dict, Mapping

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer

from .loading import (
    PICKLE_SUFFIX,
    SAFETENSORS_SUFFIX,
    CheckpointFormatError,
    load_checkpoint_file,
)

__all__ = ["AQCheckpointer", "atomic_write", "pickle_checkpoint_to_detectron2"]

# Suffix of the file a checkpoint is written to before it is renamed into place.
PARTIAL_SUFFIX = ".partial"

logger = logging.getLogger(__name__)


def _is_weights_mapping(obj: Any) -> bool:
    return isinstance(obj, Mapping) and all(isinstance(v, (np.ndarray, torch.Tensor)) for v in obj.values())


def pickle_checkpoint_to_detectron2(data: Any, source: str) -> Dict[str, Any]:
    """Interpret an unpickled ``.pkl`` checkpoint like ``DetectionCheckpointer`` does.

    * ``{"model": ..., "__author__": ...}``: detectron2 model-zoo format, returned as is;
    * ``{"blobs": {...}}`` (Detectron detection models), ``{"model": {...}}`` without an author, or a
      flat ``{caffe2 name: array}`` (ImageNet models such as ``R-50.pkl``): Caffe2 names, returned as
      ``{"model": weights, "__author__": "Caffe2", "matching_heuristics": True}`` with the
      ``*_momentum`` blobs dropped.

    Raises:
        CheckpointFormatError: ``data`` is not one of these.
    """
    if not isinstance(data, Mapping):
        raise CheckpointFormatError(f"{source}: expected a dict in the pickle, got {type(data).__name__}")
    if "model" in data and "__author__" in data:
        if not isinstance(data["model"], Mapping):
            raise CheckpointFormatError(f"{source}: 'model' entry is a {type(data['model']).__name__}, not a dict")
        return dict(data)
    if "blobs" in data and isinstance(data["blobs"], Mapping):
        weights = data["blobs"]
    elif "model" in data and isinstance(data["model"], Mapping):
        weights = data["model"]
    else:
        weights = data
    weights = {k: v for k, v in weights.items() if not str(k).endswith("_momentum")}
    if not weights or not _is_weights_mapping(weights):
        bad = sorted(str(k) for k, v in weights.items() if not isinstance(v, (np.ndarray, torch.Tensor)))[:5]
        raise CheckpointFormatError(
            f"{source}: not a Caffe2/detectron2 weight pickle: entries {bad} are not arrays "
            "(expected {name: array}, {'blobs': {...}} or {'model': {...}})"
        )
    return {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` all or nothing: ``write(f)`` fills ``path + ".partial"``, which is flushed to disk
    (fsync) and then renamed over ``path`` (``os.replace``, atomic on POSIX); the directory entry is
    synced too. If ``write`` raises, the partial file is removed and ``path`` is left as it was. A
    process killed mid-write leaves at most a ``*.partial`` file, which nothing reads.

    Raises:
        ValueError: ``path`` is not a local path (an iopath URI has no atomic rename).
    """
    if "://" in path:
        raise ValueError(f"{path}: checkpoints can only be written atomically to a local directory")
    partial = path + PARTIAL_SUFFIX
    try:
        with open(partial, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class AQCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` with safe loading of ``.pth`` / ``.safetensors`` / ``.pkl`` files.

    Args:
        model: the model to load into / save.
        save_dir: where ``save`` writes checkpoints.
        trust_pickle: allow arbitrary pickled objects in ``.pkl`` / ``.pth`` files (plain pickle and
            ``torch.load(weights_only=False)``). Only for files you created yourself.
        save_to_disk, **checkpointables: as for ``DetectionCheckpointer``.
    """

    def __init__(self, model, save_dir: str = "", *, trust_pickle: bool = False, save_to_disk=None, **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.trust_pickle = trust_pickle

    def load(self, path, *args, **kwargs):
        # A plain local path that does not exist: say so by name (fvcore would assert instead).
        if path and "://" not in path and not os.path.exists(path):
            raise FileNotFoundError(f"{path}: checkpoint file not found")
        return super().load(path, *args, **kwargs)

    def _load_file(self, filename: str) -> Dict[str, Any]:
        lower = filename.lower()
        data = load_checkpoint_file(filename, trust_pickle=self.trust_pickle)
        if lower.endswith(PICKLE_SUFFIX):
            checkpoint = pickle_checkpoint_to_detectron2(data, filename)
            if checkpoint.get("__author__") != "Caffe2":
                self.logger.info("Reading a file from '%s'", checkpoint["__author__"])
            return checkpoint
        if lower.endswith(SAFETENSORS_SUFFIX):
            return {"model": dict(data)}
        if lower.endswith(".pyth"):
            # pycls checkpoints, as DetectionCheckpointer reads them.
            if not isinstance(data, Mapping) or "model_state" not in data:
                raise CheckpointFormatError(f"{filename}: pycls .pyth checkpoints must contain 'model_state'")
            model_state = {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")}
            return {"model": model_state, "__author__": "pycls", "matching_heuristics": True}
        if not isinstance(data, Mapping):
            raise CheckpointFormatError(f"{filename}: expected a dict in the checkpoint, got {type(data).__name__}")
        if "model" not in data:
            data = {"model": data}
        if not isinstance(data["model"], Mapping):
            raise CheckpointFormatError(
                f"{filename}: 'model' entry is a {type(data['model']).__name__}, not a state dict"
            )
        return dict(data)

    def save(self, name: str, **kwargs: Any) -> None:
        """As fvcore's ``Checkpointer.save`` (model, checkpointables and ``kwargs`` in ``name.pth``, then
        tag it in ``last_checkpoint``), with both files written atomically (:func:`atomic_write`)."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        if os.path.basename(save_file) != basename:
            raise ValueError(f"checkpoint name {name!r} must not contain a directory")
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write(os.path.join(self.save_dir, "last_checkpoint"),
                     lambda f: f.write(last_filename_basename.encode("utf-8")))
