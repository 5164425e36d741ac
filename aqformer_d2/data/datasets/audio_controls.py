"""Audio controls for checking that a model listens: datasets whose clips carry another clip's audio.

``register_audio_swapped(name)`` registers ``{name}_audioswap``: the same clips (frames, masks) as
``name``, where clip i's audio files are those of clip perm(i), perm a fixed-seed derangement (no clip
keeps its own audio). A model that uses the audio should score clearly lower on it.
The other control, audio-blind training, is ``INPUT.AUDIO.ZERO_INPUT True`` in the mapper.

Negative audio: ``register_negative_audio(name, kind, level_db)`` registers ``{name}_neg_{kind}[_{level}db]``: the
same clips, each dict carrying a ``"negative_audio"`` spec (aqformer_d2/data/negative_audio.py), so the mapper
replaces the soundtrack by silence / noise / an off-screen sound and the ground truth is empty in every frame.

Audio-pathway attribution: ``register_audio_swapped(name, pathways=("abti",))`` keeps each clip's own
audio and adds ``"pathway_audio_files"``: pathway -> the donor clip's audio files. The mapper loads them
into the clip's ``"pathway_audio"`` and the model (AQFormer) uses the donor's audio in those pathways only.

Negatives by pathway: ``register_pathway_negative_audio(name, kind, level_db, pathways)`` registers a copy
whose clips hear the negative ``kind`` in the named pathways only and silence in the others: each dict
carries a silence spec as ``"negative_audio"`` and ``"pathway_negative_audio"``: pathway -> the ``kind``
spec. Every pathway hears a negative, so the ground truth stays empty; which pathways hear the sound says
where a model's false positives on it come from (docs/listening.md). With ``elsewhere="own"`` the other
pathways hear the clip's own audio instead (no ``"negative_audio"``; the clip's own ground truth).
"""
import copy
from typing import List, Optional, Sequence, Tuple

import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..negative_audio import negative_specs_for

__all__ = [
    "AUDIO_PATHWAYS", "derangement", "register_audio_swapped", "swap_audio", "with_negative_audio",
    "negative_dataset_name", "register_negative_audio", "PATHWAY_ELSEWHERE", "with_pathway_negative_audio",
    "pathway_negative_dataset_name", "register_pathway_negative_audio",
]

_AUDIO_KEYS = ("audio_logmel_file", "audio_wav_file")
# The model's audio pathways (same names as aqformer_d2.modeling.meta_arch.AUDIO_PATHWAYS, which this
# layer may not import): eq. (1)-(2) in the pixel decoder, ABTI, and the audio queries A^0.
AUDIO_PATHWAYS = ("pixel", "abti", "query")


def derangement(n: int, seed: int) -> np.ndarray:
    """A permutation of range(n) with no fixed point (n >= 2): a random order, each element mapped to the next."""
    if n < 2:
        raise ValueError(f"derangement: need at least 2 clips to swap audio, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    perm = np.empty(n, dtype=np.int64)
    perm[order] = np.roll(order, -1)
    return perm


def _check_pathways(pathways: Optional[Sequence[str]]) -> Optional[Tuple[str, ...]]:
    if pathways is None:
        return None
    pathways = tuple(pathways)
    bad = [p for p in pathways if p not in AUDIO_PATHWAYS]
    if bad or not pathways or len(set(pathways)) != len(pathways):
        raise ValueError(f"pathways must be distinct names from {AUDIO_PATHWAYS} (or None: all audio), got {pathways}")
    return tuple(p for p in AUDIO_PATHWAYS if p in pathways)


def _check_named_pathways(pathways: Sequence[str]) -> Tuple[str, ...]:
    """:func:`_check_pathways` where None (= every pathway) is not an answer: the names, in model order."""
    if pathways is None:
        raise ValueError(f"name the pathways (distinct names from {AUDIO_PATHWAYS}) that hear the negative")
    return _check_pathways(pathways)


def _derangement_by_length(dataset_dicts: List[dict], seed: int) -> np.ndarray:
    """A derangement of the clips that maps every clip to one with the same "num_frames": a donor's audio
    has one example per frame of its own clip, so a 5-frame clip cannot take a 10-frame clip's audio (AVSS
    mixes both). Each group of equal length is deranged with ``seed`` (:func:`derangement`); dicts without
    "num_frames" form one group, so S4 / MS3 datasets get ``derangement(n, seed)`` itself."""
    lengths = [d.get("num_frames") for d in dataset_dicts]
    perm = np.empty(len(dataset_dicts), dtype=np.int64)
    for length in dict.fromkeys(lengths):
        members = np.array([i for i, n in enumerate(lengths) if n == length], dtype=np.int64)
        if len(members) < 2:
            raise ValueError(f"swap_audio: only {len(members)} clip(s) with num_frames={length}; "
                             "a swapped-audio control needs at least 2 clips of each length")
        perm[members] = members[derangement(len(members), seed)]
    return perm


def swap_audio(dataset_dicts: List[dict], seed: int = 0, pathways: Optional[Sequence[str]] = None) -> List[dict]:
    """Copies of ``dataset_dicts`` whose audio comes from another clip (see module doc).

    Args:
        dataset_dicts: registered dataset dicts with "audio_logmel_file" / "audio_wav_file".
        seed: seed of the derangement (clip i gets the audio of clip perm(i) != i, a clip with as many
            frames as clip i).
        pathways: None: the audio files themselves are replaced (every pathway hears the donor). A subset of
            :data:`AUDIO_PATHWAYS`: the clip keeps its audio and "pathway_audio_files" maps each named pathway
            to the donor's audio files.
    """
    pathways = _check_pathways(pathways)
    perm = _derangement_by_length(dataset_dicts, seed)
    out = []
    for i, d in enumerate(dataset_dicts):
        new = copy.deepcopy(d)
        donor = dataset_dicts[perm[i]]
        donor_files = {key: donor[key] for key in _AUDIO_KEYS}
        if pathways is None:
            new.update(donor_files)
        else:
            new["pathway_audio_files"] = {p: dict(donor_files) for p in pathways}
        new["audio_from_video_id"] = donor["video_id"]
        out.append(new)
    return out


def register_audio_swapped(name: str, seed: int = 0, pathways: Optional[Sequence[str]] = None) -> str:
    """Register (or re-register) the swapped-audio copy of ``name`` and return its name:
    ``{name}_audioswap`` (all audio, ``pathways`` None) or ``{name}_audioswap_{p1+p2}`` (those pathways only)."""
    pathways = _check_pathways(pathways)
    new_name = f"{name}_audioswap" + ("" if pathways is None else "_" + "+".join(pathways))
    if new_name in DatasetCatalog.list():
        DatasetCatalog.remove(new_name)
        MetadataCatalog.remove(new_name)
    DatasetCatalog.register(new_name, lambda: swap_audio(DatasetCatalog.get(name), seed, pathways))
    meta = MetadataCatalog.get(name).as_dict()
    meta.pop("name", None)
    MetadataCatalog.get(new_name).set(
        **meta, audio_swapped_from=name, audio_swap_seed=seed, audio_swap_pathways=list(pathways or AUDIO_PATHWAYS)
    )
    return new_name


def with_negative_audio(dataset_dicts: List[dict], kind: str, level_db: Optional[float], seed: int = 0) -> List[dict]:
    """Copies of ``dataset_dicts`` whose clips hear the negative ``kind`` at ``level_db`` (None for silence):
    each gets a ``"negative_audio"`` spec with its own seed drawn from ``seed``."""
    specs = negative_specs_for(dataset_dicts, kind, level_db, seed)
    out = []
    for d, spec in zip(dataset_dicts, specs):
        new = copy.deepcopy(d)
        new["negative_audio"] = spec
        out.append(new)
    return out


def negative_dataset_name(name: str, kind: str, level_db: Optional[float]) -> str:
    """``{name}_neg_{kind}`` (silence) or ``{name}_neg_{kind}_{level}db``, e.g. ``..._neg_white_noise_m20db``."""
    if level_db is None:
        return f"{name}_neg_{kind}"
    level = f"{float(level_db):g}".replace("-", "m").replace(".", "p")
    return f"{name}_neg_{kind}_{level}db"


def register_negative_audio(name: str, kind: str, level_db: Optional[float] = None, seed: int = 0) -> str:
    """Register (or re-register) the negative-audio copy of ``name`` (see :func:`with_negative_audio`) and
    return its name (:func:`negative_dataset_name`)."""
    new_name = negative_dataset_name(name, kind, level_db)
    if new_name in DatasetCatalog.list():
        DatasetCatalog.remove(new_name)
        MetadataCatalog.remove(new_name)
    DatasetCatalog.register(new_name, lambda: with_negative_audio(DatasetCatalog.get(name), kind, level_db, seed))
    meta = MetadataCatalog.get(name).as_dict()
    meta.pop("name", None)
    MetadataCatalog.get(new_name).set(
        **meta, negative_audio_of=name, negative_audio_kind=kind, negative_audio_level_db=level_db,
        negative_audio_seed=seed,
    )
    return new_name


# What the pathways a negative-by-pathway does not name hear: silence, or the clip's own audio.
PATHWAY_ELSEWHERE = ("silence", "own")


def _check_elsewhere(elsewhere: str) -> str:
    if elsewhere not in PATHWAY_ELSEWHERE:
        raise ValueError(f"elsewhere must be one of {PATHWAY_ELSEWHERE} (what the pathways not named hear), got {elsewhere!r}")
    return elsewhere


def with_pathway_negative_audio(dataset_dicts: List[dict], kind: str, level_db: Optional[float],
                                pathways: Sequence[str], seed: int = 0, elsewhere: str = "silence") -> List[dict]:
    """Copies of ``dataset_dicts`` whose clips hear the negative ``kind`` at ``level_db`` in ``pathways`` only
    (a subset of :data:`AUDIO_PATHWAYS`); the other pathways hear silence (``elsewhere="silence"``: every
    pathway hears a negative, the ground truth is empty) or the clip's own audio (``"own"``: the ground
    truth is the clip's own, as for the pathway swap).

    Each clip gets the same ``kind`` spec (seed) as :func:`with_negative_audio` with this ``seed`` gives it, so
    the sound is the one the all-pathway condition plays: ``"pathway_negative_audio"`` = {pathway: the
    ``kind`` spec}, and with silence elsewhere ``"negative_audio"`` = silence."""
    pathways = _check_named_pathways(pathways)
    _check_elsewhere(elsewhere)
    specs = negative_specs_for(dataset_dicts, kind, level_db, seed)
    out = []
    for d, spec in zip(dataset_dicts, specs):
        new = copy.deepcopy(d)
        if elsewhere == "silence":
            new["negative_audio"] = {"kind": "silence", "level_db": None, "seed": spec["seed"]}
        new["pathway_negative_audio"] = {p: dict(spec) for p in pathways}
        out.append(new)
    return out


def pathway_negative_dataset_name(name: str, kind: str, level_db: Optional[float], pathways: Sequence[str],
                                  elsewhere: str = "silence") -> str:
    """:func:`negative_dataset_name` + ``_in_{p1+p2}`` (silence elsewhere), e.g.
    ``..._neg_offscreen_scene_0db_in_query``, or ``{name}_own`` + the same (own audio elsewhere)."""
    base = name if _check_elsewhere(elsewhere) == "silence" else f"{name}_own"
    return f"{negative_dataset_name(base, kind, level_db)}_in_{'+'.join(_check_named_pathways(pathways))}"


def register_pathway_negative_audio(name: str, kind: str, level_db: Optional[float], pathways: Sequence[str],
                                    seed: int = 0, elsewhere: str = "silence") -> str:
    """Register (or re-register) the copy of ``name`` that hears ``kind`` in ``pathways`` only and ``elsewhere``
    in the others (:func:`with_pathway_negative_audio`), and return its name
    (:func:`pathway_negative_dataset_name`)."""
    pathways = _check_named_pathways(pathways)
    new_name = pathway_negative_dataset_name(name, kind, level_db, pathways, elsewhere)
    if new_name in DatasetCatalog.list():
        DatasetCatalog.remove(new_name)
        MetadataCatalog.remove(new_name)
    DatasetCatalog.register(
        new_name,
        lambda: with_pathway_negative_audio(DatasetCatalog.get(name), kind, level_db, pathways, seed, elsewhere),
    )
    meta = MetadataCatalog.get(name).as_dict()
    meta.pop("name", None)
    MetadataCatalog.get(new_name).set(
        **meta, negative_audio_of=name, negative_audio_kind=kind, negative_audio_level_db=level_db,
        negative_audio_seed=seed, negative_audio_pathways=list(pathways), negative_audio_elsewhere=elsewhere,
    )
    return new_name
