"""File writing shared by the SynthAVS writers: log-mel pickles (byte-reproducible), PNGs, CSV, JSON."""
from __future__ import annotations

import csv
import json
import os
import pickle
import struct
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from .clip import NUM_FRAMES
from .sounds import SAMPLE_RATE

__all__ = ["dump_tensor", "load_logmel_fn", "logmel_tensor", "save_png", "write_csv", "write_json"]


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
