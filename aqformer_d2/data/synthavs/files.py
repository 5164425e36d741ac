"""File writing shared by the SynthAVS writers: log-mel pickles (byte-reproducible), PNGs, CSV, JSON, and
the manifest check that makes a re-run skip a complete dataset and never write into a foreign one."""
from __future__ import annotations

import csv
import json
import logging
import os
import pickle
import shutil
import struct
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from .clip import NUM_FRAMES, SPLITS, _is_int
from .sounds import SAMPLE_RATE

__all__ = [
    "dump_tensor", "load_logmel_fn", "logmel_tensor", "prepare_root", "resolve_split_sizes", "save_png", "write_csv",
    "write_json",
]

logger = logging.getLogger(__name__)


def load_logmel_fn() -> Callable[..., Any]:
    try:
        from aqformer_d2.audio.logmel import waveform_to_examples
    except ImportError as e:
        raise ImportError(
            "SynthAVS needs aqformer_d2.audio.logmel.waveform_to_examples to write audio_log_mel/*.pkl"
        ) from e
    return waveform_to_examples


def logmel_tensor(waveform_int16: np.ndarray, logmel_fn, num_frames: int = NUM_FRAMES) -> torch.Tensor:
    """float32 ``[T, 1, 96, 64]`` VGGish log-mel examples of an int16 16 kHz waveform (T = num_frames)."""
    # Same scaling as VGGish's wavfile_to_examples: int16 / 32768.
    waveform = waveform_int16.astype(np.float32) / 32768.0
    examples = logmel_fn(waveform, SAMPLE_RATE, num_examples=num_frames)
    examples = torch.as_tensor(examples, dtype=torch.float32).contiguous()
    if tuple(examples.shape) != (num_frames, 1, 96, 64):
        raise RuntimeError(
            f"log-mel front end returned shape {tuple(examples.shape)}, expected ({num_frames}, 1, 96, 64)"
        )
    return examples


class _DeterministicTensorPickler(pickle.Pickler):
    """``pickle.Pickler`` whose output for a CPU tensor does not depend on memory addresses.

    ``pickle.dump(tensor)`` embeds the storage as ``torch.storage._load_from_bytes(legacy torch.save
    bytes)``, and those bytes name the storage by its address (``str(storage._cdata)``), so two dumps
    of equal tensors differ. This pickler emits the same structure (same globals, loads with plain
    ``pickle.load`` and with :func:`aqformer_d2.utils.safe_pickle.load_pickle_restricted`) with the
    storage key replaced by ``"0"``.
    """

    def reducer_override(self, obj):
        if not isinstance(obj, torch.storage.TypedStorage):
            return NotImplemented
        fn, args = obj.__reduce__()
        (data,) = args
        key = str(obj._untyped_storage._cdata).encode("ascii")
        token = b"X" + struct.pack("<I", len(key)) + key  # protocol-2 BINUNICODE of the key
        if data.count(token) != 2:
            raise RuntimeError("unexpected legacy torch.save layout: cannot make the log-mel pickle deterministic")
        return fn, (data.replace(token, b"X" + struct.pack("<I", 1) + b"0"),)


def dump_tensor(tensor: torch.Tensor, fh) -> None:
    """Equivalent of ``pickle.dump(tensor, fh)`` (protocol 4) with byte-reproducible output."""
    _DeterministicTensorPickler(fh, protocol=4).dump(tensor)


def save_png(array: np.ndarray, path: str, mode: str) -> None:
    if mode == "P":
        img = Image.fromarray(array.astype(np.uint8), mode="P")
        img.putpalette([0, 0, 0, 255, 255, 255] + [0, 0, 0] * 254)
    else:
        img = Image.fromarray(array, mode=mode)
    # zlib level 3: ~3x faster than Pillow's default 6 for ~10% larger frames.
    img.save(path, format="PNG", compress_level=3)


def write_csv(path: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_json(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def resolve_split_sizes(
    variants: Sequence[str], n_train, n_val, n_test, defaults: Dict[str, Dict[str, int]]
) -> Dict[str, Dict[str, int]]:
    """Clips per split for each variant: ``n_<split>``, or ``defaults[variant][split]`` where it is None.

    Raises:
        ValueError: a count that is not a non-negative int, above 99999 (5-digit clip names), or all zero.
    """
    sizes: Dict[str, Dict[str, int]] = {}
    for variant in variants:
        sizes[variant] = {}
        for split, n in zip(SPLITS, (n_train, n_val, n_test)):
            if n is None:
                n = defaults[variant][split]
            elif not _is_int(n) or n < 0:
                raise ValueError(f"n_{split} must be a non-negative int or None (variant default), got {n!r}")
            if n > 99999:
                raise ValueError(f"n_{split} must be at most 99999 (clip names use 5 digits), got {n}")
            sizes[variant][split] = int(n)
    if not any(sum(s.values()) for s in sizes.values()):
        raise ValueError("nothing to generate: every split has 0 clips")
    return sizes


def _params_diff(old: Dict[str, Any], new: Dict[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def prepare_root(
    root: str, params: Dict[str, Any], overwrite: bool, manifest_name: str, owned: Sequence[str], foreign: str
) -> Optional[Dict[str, Any]]:
    """Return the existing manifest if the dataset under ``root`` is complete and made with ``params``;
    otherwise remove an incomplete / replaced one (``overwrite``) or refuse.

    Args:
        manifest_name: the writer's manifest file under root.
        owned: the files / folders under root the writer creates (removed when replacing).
        foreign: what those paths without a manifest probably are (named in the refusal).

    Raises:
        FileExistsError: a dataset with other parameters (and not ``overwrite``), or ``owned`` paths
            without a manifest (never written into, even with ``overwrite``).
    """
    manifest_path = os.path.join(root, manifest_name)
    ours = [os.path.join(root, d) for d in owned]
    if os.path.isfile(manifest_path):
        try:
            with open(manifest_path, encoding="utf-8") as fh:
                manifest = json.load(fh)
            old_params = manifest["params"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RuntimeError(f"{manifest_path}: unreadable SynthAVS manifest ({e}); delete it or the folder") from e
        if old_params == params and manifest.get("complete") is True:
            return manifest
        if old_params != params and not overwrite:
            raise FileExistsError(
                f"{root} holds a SynthAVS dataset generated with different parameters ({_params_diff(old_params, params)}); "
                "pass overwrite=True (--overwrite) to replace it, or choose another root"
            )
        if old_params == params:
            logger.info("SynthAVS at %s is incomplete (interrupted run): regenerating it", root)
        else:
            logger.info("SynthAVS at %s: parameters changed (%s), replacing it", root, _params_diff(old_params, params))
        for d in ours:
            if os.path.isdir(d):
                shutil.rmtree(d)
            elif os.path.exists(d):
                os.remove(d)
        os.remove(manifest_path)
    elif any(os.path.exists(d) for d in ours):
        names = " or ".join(d + ("/" if "." not in d else "") for d in owned)
        raise FileExistsError(
            f"{root} already holds {names} but no {manifest_name}: it is not a SynthAVS dataset "
            f"(perhaps the real {foreign}). Refusing to write into it, even with overwrite; choose another root"
        )
    return None
