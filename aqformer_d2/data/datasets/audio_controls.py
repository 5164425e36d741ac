"""Audio controls for checking that a model listens: datasets whose clips carry another clip's audio.

``register_audio_swapped(name)`` registers ``{name}_audioswap``: the same clips (frames, masks) as
``name``, where clip i's audio files are those of clip perm(i), perm a fixed-seed derangement (no clip
keeps its own audio). A model that uses the audio should score clearly lower on it.
The other control, audio-blind training, is ``INPUT.AUDIO.ZERO_INPUT True`` in the mapper.
"""
import copy
from typing import List

import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = ["derangement", "register_audio_swapped", "swap_audio"]

_AUDIO_KEYS = ("audio_logmel_file", "audio_wav_file")


def derangement(n: int, seed: int) -> np.ndarray:
    """A permutation of range(n) with no fixed point (n >= 2): a random order, each element mapped to the next."""
    if n < 2:
        raise ValueError(f"derangement: need at least 2 clips to swap audio, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    perm = np.empty(n, dtype=np.int64)
    perm[order] = np.roll(order, -1)
    return perm


def swap_audio(dataset_dicts: List[dict], seed: int = 0) -> List[dict]:
    """Copies of ``dataset_dicts`` whose audio file paths are taken from another clip (see module doc)."""
    perm = derangement(len(dataset_dicts), seed)
    out = []
    for i, d in enumerate(dataset_dicts):
        new = copy.deepcopy(d)
        donor = dataset_dicts[perm[i]]
        for key in _AUDIO_KEYS:
            new[key] = donor[key]
        new["audio_from_video_id"] = donor["video_id"]
        out.append(new)
    return out


def register_audio_swapped(name: str, seed: int = 0) -> str:
    """Register (or re-register) ``{name}_audioswap`` and return that name."""
    new_name = f"{name}_audioswap"
    if new_name in DatasetCatalog.list():
        DatasetCatalog.remove(new_name)
        MetadataCatalog.remove(new_name)
    DatasetCatalog.register(new_name, lambda: swap_audio(DatasetCatalog.get(name), seed))
    meta = MetadataCatalog.get(name).as_dict()
    meta.pop("name", None)
    MetadataCatalog.get(new_name).set(**meta, audio_swapped_from=name, audio_swap_seed=seed)
    return new_name
