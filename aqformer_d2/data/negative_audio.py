"""Negative audio for a clip: its soundtrack replaced by sound that no on-screen object makes.

A *negative* clip keeps its frames and gets an all-empty ground truth; its audio is one of
:data:`NEGATIVE_KINDS`:

* ``"silence"``: zeros through the real log-mel front end;
* ``"white_noise"``, ``"pink_noise"``, ``"brown_noise"``: unit-RMS noise (:mod:`aqformer_d2.audio.negatives`)
  set ``level_db`` dB relative to the RMS of the clip's own soundtrack;
* ``"offscreen"``: the sound of a SynthAVS category none of whose objects is in the clip, alone, as loud as
  the clip's soundtrack (``level_db`` = :data:`OFFSCREEN_LEVEL_DB`). Needs the dataset dict's
  ``"synthavs_category_ids"`` (categories of all objects in the clip, sounding or not) and
  ``"synthavs_num_categories"`` (the pool), which the SynthAVS registration adds.
* ``"offscreen_scene"``: the same absent category's sound over SynthAVS's background noise at the dataset's
  SNR (``"synthavs_snr_db"``, from the generator's manifest), i.e. a soundtrack the generator makes for a clip
  whose one sounding object is off screen; as loud as the clip's soundtrack. Every positive soundtrack carries
  that background noise, so a model cannot tell this negative from a positive by the noise floor alone (it
  can tell a lone ``"offscreen"`` source so).

A negative is described by a JSON-able *spec* ``{"kind", "level_db" (None for silence), "seed"}``; the
waveform is a pure function of the spec and of the clip (its RMS, length and objects). Specs come from a
dataset dict's ``"negative_audio"`` key (evaluation: :func:`aqformer_d2.data.datasets.register_negative_audio`)
or, in training, from :class:`NegativeAudioSampler` (``INPUT.NEGATIVE_AUDIO.*``), which the mapper calls with
the generator state of the clip's stream position, so negatives are resumed exactly like augmentations.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..audio.io import read_wav, to_mono
from ..audio.logmel import SAMPLE_RATE, waveform_to_examples
from ..audio.negatives import NOISE_KINDS, noise, rms, scale_to_rms, silence
from .synthavs.sounds import background_noise, category_sound

__all__ = [
    "NEGATIVE_KINDS",
    "LEVELLED_KINDS",
    "OFFSCREEN_LEVEL_DB",
    "OFFSCREEN_KINDS",
    "NegativeAudioSampler",
    "check_negative_spec",
    "offscreen_category",
    "offscreen_category_of",
    "negative_waveform",
    "negative_examples",
    "negative_specs_for",
]

OFFSCREEN_LEVEL_DB = 0.0
LEVELLED_KINDS = NOISE_KINDS
OFFSCREEN_KINDS = ("offscreen", "offscreen_scene")
NEGATIVE_KINDS = ("silence",) + NOISE_KINDS + OFFSCREEN_KINDS
_SPEC_KEYS = {"kind", "level_db", "seed"}
_SEED_HIGH = 2**62


def check_negative_spec(spec: dict) -> dict:
    """Validate a negative-audio spec (see module doc); returns it.

    Raises:
        ValueError: unknown kind, missing / extra keys, a level where none belongs or none where one does.
    """
    if not isinstance(spec, dict) or set(spec) != _SPEC_KEYS:
        raise ValueError(f"negative-audio spec must be a dict with keys {sorted(_SPEC_KEYS)}, got {spec!r}")
    kind, level = spec["kind"], spec["level_db"]
    if kind not in NEGATIVE_KINDS:
        raise ValueError(f"negative-audio kind {kind!r} is not one of {NEGATIVE_KINDS}")
    if (kind == "silence") != (level is None):
        raise ValueError(f"negative-audio spec {spec!r}: silence takes level_db None, every other kind a number")
    if level is not None and not math.isfinite(float(level)):
        raise ValueError(f"negative-audio spec {spec!r}: level_db must be finite")
    if isinstance(spec["seed"], bool) or int(spec["seed"]) != spec["seed"] or spec["seed"] < 0:
        raise ValueError(f"negative-audio spec {spec!r}: seed must be a non-negative integer")
    return spec


def offscreen_category(rng: np.random.Generator, onscreen: Sequence[int], num_categories: int) -> int:
    """A category id in ``range(num_categories)`` not in ``onscreen``, uniformly at random."""
    absent = sorted(set(range(int(num_categories))) - {int(c) for c in onscreen})
    if not absent:
        raise ValueError(f"no off-screen category: all {num_categories} categories are in the clip")
    return int(absent[int(rng.integers(len(absent)))])


def offscreen_category_of(spec: dict, dataset_dict: dict) -> int:
    """The category id whose sound the off-screen negative ``spec`` plays in the clip ``dataset_dict``.

    It is the first draw of the spec's generator, as :func:`negative_waveform` makes it, so a listening
    record can be split by the sound the model heard without storing it.

    Raises:
        ValueError: ``spec`` is not of an off-screen kind, or the clip lacks the SynthAVS keys.
    """
    check_negative_spec(spec)
    if spec["kind"] not in OFFSCREEN_KINDS:
        raise ValueError(f"negative-audio spec {spec!r} plays no off-screen category (kinds {OFFSCREEN_KINDS})")
    _require_synthavs_keys(spec, dataset_dict, ("synthavs_category_ids", "synthavs_num_categories"))
    rng = np.random.default_rng(int(spec["seed"]))
    return offscreen_category(rng, dataset_dict["synthavs_category_ids"], dataset_dict["synthavs_num_categories"])


def _silence(spec, rng, clip_rms, num_samples, dataset_dict):
    return silence(num_samples)


def _noise(spec, rng, clip_rms, num_samples, dataset_dict):
    return scale_to_rms(noise(spec["kind"], rng, num_samples, SAMPLE_RATE), clip_rms, spec["level_db"])


def _require_synthavs_keys(spec, dataset_dict, keys):
    missing = [k for k in keys if k not in dataset_dict]
    if missing:
        raise ValueError(
            f"Video {dataset_dict.get('video_id')!r}: an off-screen negative ({spec['kind']!r}) needs the SynthAVS "
            f"description of the clip (dataset dict keys {missing} are missing; only the SynthAVS registration adds "
            f"them). Leave {list(OFFSCREEN_KINDS)} out of INPUT.NEGATIVE_AUDIO.KINDS for other datasets."
        )


def _offscreen_source(spec, rng, num_samples, dataset_dict, extra_keys=()):
    """Unit-RMS sound ``[num_samples]`` of a category with no object in the clip (the category is the
    generator's first draw: :func:`offscreen_category_of` relies on that order)."""
    _require_synthavs_keys(spec, dataset_dict, ("synthavs_category_ids", "synthavs_num_categories") + extra_keys)
    category = offscreen_category(rng, dataset_dict["synthavs_category_ids"], dataset_dict["synthavs_num_categories"])
    return category_sound(category, rng, num_samples)


def _offscreen(spec, rng, clip_rms, num_samples, dataset_dict):
    return scale_to_rms(_offscreen_source(spec, rng, num_samples, dataset_dict), clip_rms, spec["level_db"])


def _offscreen_scene(spec, rng, clip_rms, num_samples, dataset_dict):
    source = _offscreen_source(spec, rng, num_samples, dataset_dict, ("synthavs_snr_db",))  # unit RMS
    snr_db = dataset_dict["synthavs_snr_db"]
    mix = source
    if snr_db is not None:  # the generator's mix: background noise snr_db below a unit-RMS source
        mix = source + 10.0 ** (-float(snr_db) / 20.0) * background_noise(rng, num_samples)
    return scale_to_rms(mix, clip_rms, spec["level_db"])


# kind -> maker(spec, rng, clip_rms, num_samples, dataset_dict) -> float64 [num_samples] at SAMPLE_RATE
_MAKERS = {"silence": _silence, "offscreen": _offscreen, "offscreen_scene": _offscreen_scene,
           **{k: _noise for k in NOISE_KINDS}}


def negative_waveform(spec: dict, *, clip_rms: float, num_samples: int, dataset_dict: Optional[dict] = None) -> np.ndarray:
    """The negative waveform of ``spec``: float64 ``[num_samples]`` mono at 16 kHz.

    Args:
        spec: ``{"kind", "level_db", "seed"}`` (:func:`check_negative_spec`); all randomness comes from
            ``numpy.random.default_rng(seed)``.
        clip_rms: RMS of the clip's own soundtrack, the 0 dB reference of ``level_db``.
        num_samples: length in samples at 16 kHz.
        dataset_dict: the clip's dataset dict (``"offscreen"`` reads its SynthAVS categories).
    """
    check_negative_spec(spec)
    rng = np.random.default_rng(int(spec["seed"]))
    return _MAKERS[spec["kind"]](spec, rng, float(clip_rms), int(num_samples), dataset_dict or {})


def negative_examples(dataset_dict: dict, spec: dict, num_frames: int) -> torch.Tensor:
    """Log-mel examples float32 ``[T, 1, 96, 64]`` of the clip's negative audio.

    The clip's WAV (``"audio_wav_file"``) gives the reference RMS and the length; the negative waveform
    has the same duration at 16 kHz and goes through :func:`aqformer_d2.audio.logmel.waveform_to_examples`
    with ``num_examples = T``, exactly as a soundtrack read from a file does.

    Raises:
        ValueError: the spec is invalid, or the clip's soundtrack is silent (naming the file) so that a
            level relative to it is undefined.
    """
    path = dataset_dict["audio_wav_file"]
    waveform, sample_rate = read_wav(path)  # [S] or [C, S]
    mono = to_mono(waveform)  # [S]
    num_samples = int(round(mono.shape[-1] * SAMPLE_RATE / sample_rate))
    reference = rms(mono)
    if reference <= 0.0 and spec.get("level_db") is not None:
        raise ValueError(f"{path}: the soundtrack is silent; a negative {spec['level_db']} dB relative to it is undefined")
    neg = negative_waveform(spec, clip_rms=reference, num_samples=num_samples, dataset_dict=dataset_dict)
    return waveform_to_examples(neg, SAMPLE_RATE, num_examples=int(num_frames))  # [T, 1, 96, 64]


class NegativeAudioSampler:
    """Draws, per training clip, whether its audio is replaced by a negative and which one.

    Args:
        prob: probability that a clip becomes a negative (``INPUT.NEGATIVE_AUDIO.PROB``), in [0, 1].
        kinds: kinds to choose from (``INPUT.NEGATIVE_AUDIO.KINDS``), a subset of :data:`NEGATIVE_KINDS`.
        kind_weights: relative weights of ``kinds``, one each (``INPUT.NEGATIVE_AUDIO.KIND_WEIGHTS``), finite and
            >= 0 with a positive sum; empty (the default) = uniformly, by one integer draw (``rng.integers``).
        levels_db: levels of the noise kinds relative to the clip's RMS, chosen uniformly
            (``INPUT.NEGATIVE_AUDIO.LEVELS_DB``); an off-screen kind is always at :data:`OFFSCREEN_LEVEL_DB`.
    """

    def __init__(self, *, prob: float, kinds: Sequence[str], levels_db: Sequence[float],
                 kind_weights: Sequence[float] = ()):
        if not 0.0 <= float(prob) <= 1.0:
            raise ValueError(f"INPUT.NEGATIVE_AUDIO.PROB must be in [0, 1], got {prob}")
        kinds, levels = tuple(kinds), tuple(float(v) for v in levels_db)
        bad = [k for k in kinds if k not in NEGATIVE_KINDS]
        if bad or not kinds or len(set(kinds)) != len(kinds):
            raise ValueError(f"INPUT.NEGATIVE_AUDIO.KINDS must be distinct names from {NEGATIVE_KINDS}, got {list(kinds)}")
        if any(k in LEVELLED_KINDS for k in kinds) and not levels:
            raise ValueError(f"INPUT.NEGATIVE_AUDIO.LEVELS_DB is empty but KINDS {list(kinds)} include noise")
        if not all(math.isfinite(v) for v in levels):
            raise ValueError(f"INPUT.NEGATIVE_AUDIO.LEVELS_DB must be finite, got {list(levels)}")
        weights = tuple(float(w) for w in kind_weights)
        if weights and (len(weights) != len(kinds) or not all(math.isfinite(w) and w >= 0.0 for w in weights)
                        or sum(weights) <= 0.0):
            raise ValueError(f"INPUT.NEGATIVE_AUDIO.KIND_WEIGHTS must be empty or one finite weight >= 0 per kind of "
                             f"KINDS {list(kinds)} with a positive sum, got {list(weights)}")
        self.prob, self.kinds, self.levels_db = float(prob), kinds, levels
        # cumulative shares of the kinds [K], last 1.0; None = uniform
        self._cumulative = None if not weights else np.cumsum(weights) / sum(weights)

    @classmethod
    def from_config(cls, cfg) -> Optional["NegativeAudioSampler"]:
        """The sampler of ``cfg.INPUT.NEGATIVE_AUDIO``, or None when PROB is 0 (no clip is touched and no
        random number is drawn, so training is bitwise what it was without the feature)."""
        node = cfg.INPUT.NEGATIVE_AUDIO
        sampler = cls(prob=node.PROB, kinds=node.KINDS, levels_db=node.LEVELS_DB, kind_weights=node.KIND_WEIGHTS)
        return sampler if sampler.prob > 0.0 else None

    def draw(self, rng: np.random.Generator) -> Optional[Dict]:
        """A spec (``{"kind", "level_db", "seed"}``) with probability ``prob``, else None.

        Always draws the same count of numbers from ``rng`` (4), whatever the outcome."""
        u = rng.random()
        if self._cumulative is None:
            k = rng.integers(len(self.kinds))
        else:  # inverse of the weights' distribution function at one uniform number; min() guards the last
            # cumulative share, which round-off may leave a hair below 1.0
            k = min(int(np.searchsorted(self._cumulative, rng.random(), side="right")), len(self.kinds) - 1)
        l = rng.integers(max(len(self.levels_db), 1))
        seed = rng.integers(_SEED_HIGH)
        if u >= self.prob:
            return None
        kind = self.kinds[int(k)]
        levels = {"silence": None, **{k: OFFSCREEN_LEVEL_DB for k in OFFSCREEN_KINDS}}
        level = levels[kind] if kind in levels else self.levels_db[int(l)]
        return {"kind": kind, "level_db": level, "seed": int(seed)}

    def __repr__(self) -> str:
        shares = "" if self._cumulative is None else \
            f", kind_shares={np.diff(self._cumulative, prepend=0.0).round(4).tolist()}"
        return (f"NegativeAudioSampler(prob={self.prob}, kinds={list(self.kinds)}, "
                f"levels_db={list(self.levels_db)}{shares})")


def negative_specs_for(dataset_dicts: List[dict], kind: str, level_db: Optional[float], seed: int) -> List[dict]:
    """One spec per clip for an evaluation condition: ``kind`` at ``level_db``, seeds drawn from ``seed``
    (clip i gets the i-th draw, so a condition's audio is fixed for a given dataset order and seed)."""
    seeds = np.random.default_rng(int(seed)).integers(_SEED_HIGH, size=len(dataset_dicts))
    return [check_negative_spec({"kind": kind, "level_db": level_db, "seed": int(s)}) for s in seeds]
