"""detectron2 ``DetectionCheckpointer`` that never runs code from a weight file, and writes all or nothing.

Differences from ``DetectionCheckpointer``:

* files are read by :func:`~aqformer_d2.checkpoint.load_checkpoint_file`, which runs no code from them (``.pkl``
  files of the detectron2 / Detectron model zoo, e.g. ``R-50.pkl``, through the restricted unpickler; arbitrary
  pickles only with ``trust_pickle=True``); a missing or unreadable file raises an error naming it;
* checkpoints and the ``last_checkpoint`` tag are written with :func:`atomic_write`: a process killed while
  saving leaves the previous checkpoint tagged and intact, never a half-written file under a checkpoint's name.

Caffe2 names (``res2_0_branch2a_w`` ...) are converted by detectron2 itself, enabled by returning
``matching_heuristics=True`` exactly where ``DetectionCheckpointer`` does.
"""
from __future__ import annotations

import os
from typing import IO, Any, Callable, Dict, Mapping

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer

from .loading import PICKLE_SUFFIX, SAFETENSORS_SUFFIX, CheckpointFormatError, load_checkpoint_file

__all__ = ["AQCheckpointer", "atomic_write", "pickle_checkpoint_to_detectron2", "save_weights_checkpoint"]


def pickle_checkpoint_to_detectron2(data: Any, source: str) -> Dict[str, Any]:
    """Interpret an unpickled ``.pkl`` checkpoint like ``DetectionCheckpointer`` does.

    * ``{"model": ..., "__author__": ...}``: detectron2 model-zoo format, returned as is;
    * ``{"blobs": {...}}`` (Detectron detection models), ``{"model": {...}}`` without an author, or a flat
      ``{caffe2 name: array}`` (ImageNet models such as ``R-50.pkl``): Caffe2 names, returned as
      ``{"model": weights, "__author__": "Caffe2", "matching_heuristics": True}`` without ``*_momentum`` blobs.

    Raises:
        CheckpointFormatError: ``data`` is none of these.
    """
    if not isinstance(data, Mapping):
        raise CheckpointFormatError(f"{source}: expected a dict in the pickle, got {type(data).__name__}")
    if "model" in data and "__author__" in data:
        if not isinstance(data["model"], Mapping):
            raise CheckpointFormatError(f"{source}: 'model' entry is a {type(data['model']).__name__}, not a dict")
        return dict(data)
    weights = data
    for key in ("blobs", "model"):
        if isinstance(data.get(key), Mapping):
            weights = data[key]
            break
    weights = {k: v for k, v in weights.items() if not str(k).endswith("_momentum")}
    bad = sorted(str(k) for k, v in weights.items() if not isinstance(v, (np.ndarray, torch.Tensor)))
    if not weights or bad:
        raise CheckpointFormatError(
            f"{source}: not a Caffe2/detectron2 weight pickle: entries {bad[:5]} are not arrays "
            "(expected {name: array}, {'blobs': {...}} or {'model': {...}})"
        )
    return {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` all or nothing: ``write(f)`` fills ``path + ".partial"``, which is flushed to disk
    (fsync) and renamed over ``path`` (``os.replace``, atomic on POSIX); the directory entry is synced too.
    If ``write`` raises, the partial file is removed and ``path`` is left as it was. A process killed
    mid-write leaves at most a ``*.partial`` file, which nothing reads.

    Raises:
        ValueError: ``path`` is not a local path (an iopath URI has no atomic rename).
    """
    if "://" in path:
        raise ValueError(f"{path}: checkpoints can only be written atomically to a local directory")
    partial = path + ".partial"
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


def save_weights_checkpoint(path: str, model_state: Mapping[str, torch.Tensor], author: str) -> Dict[str, Any]:
    """Write ``{"model": model_state, "__author__": author, "matching_heuristics": False}`` to ``path`` with
    :func:`atomic_write` (folders created): a converted checkpoint that ``MODEL.WEIGHTS`` loads by exact
    names. Returns the dict."""
    checkpoint = {"model": dict(model_state), "__author__": author, "matching_heuristics": False}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: torch.save(checkpoint, f))
    return checkpoint


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
        data = data if "model" in data else {"model": data}
        if not isinstance(data["model"], Mapping):
            raise CheckpointFormatError(
                f"{filename}: 'model' entry is a {type(data['model']).__name__}, not a state dict"
            )
        return dict(data)

    def save(self, name: str, **kwargs: Any) -> None:
        """As fvcore's ``Checkpointer.save`` (model, checkpointables and ``kwargs`` in ``name.pth``, then
        tag it in ``last_checkpoint``), with both files written by :func:`atomic_write`."""
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
