"""Listening evaluation: a trained model on every test clip under each audio condition (docs/listening.md).

Conditions (:func:`listening_conditions`): the clip's own audio; another clip's audio (the existing swap
control, scored against the clip's own ground truth); and negatives, whose ground truth is empty in every
frame: silence, noise kinds at each level (dB relative to the clip's soundtrack), an off-screen sound.
:func:`evaluate_listening` runs them and :func:`summarise_listening` turns the per-clip records into the
metrics of :mod:`aqformer_d2.evaluation.listening` with bootstrap ranges over clips. ``min_area`` applies
that module's minimum-area rule to the model's output before every evaluator (off at 0).
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence

import numpy as np
from torch import nn

from detectron2.evaluation import DatasetEvaluators, inference_on_dataset

from ..data.datasets import (
    AUDIO_PATHWAYS, PATHWAY_ELSEWHERE, register_audio_swapped, register_negative_audio, register_pathway_negative_audio,
)
from ..data.negative_audio import OFFSCREEN_KINDS, OFFSCREEN_LEVEL_DB
from ..evaluation import AVSEvaluator
from ..evaluation.listening import (
    ListeningEvaluator, bootstrap_interval, check_min_area, drop_small_masks, empty_ground_truth_rates, listening_score,
)
from .trainer import AQFormerTrainer

__all__ = ["listening_conditions", "pathway_conditions", "condition_dataset", "MinAreaRule", "evaluate_listening", "summarise_listening"]

logger = logging.getLogger(__name__)


def listening_conditions(
    levels_db: Sequence[float] = (0.0, -20.0), noise_kinds: Sequence[str] = ("white_noise", "pink_noise"),
    offscreen: bool = True,
) -> List[Dict]:
    """The conditions, in report order: ``{"name", "kind", "level_db", "negative"}``; kind "own" / "swap" /
    a negative kind of :data:`aqformer_d2.data.negative_audio.NEGATIVE_KINDS`."""
    out = [{"name": "own", "kind": "own", "level_db": None, "negative": False},
           {"name": "silence", "kind": "silence", "level_db": None, "negative": True}]
    for kind in noise_kinds:
        for level in levels_db:
            out.append({"name": f"{kind}_{float(level):g}dB", "kind": kind, "level_db": float(level), "negative": True})
    if offscreen:
        for kind in OFFSCREEN_KINDS:
            out.append({"name": kind, "kind": kind, "level_db": OFFSCREEN_LEVEL_DB, "negative": True})
    out.append({"name": "swap", "kind": "swap", "level_db": None, "negative": False})
    return out


def pathway_conditions(condition: Dict, pathways: Sequence[str] = AUDIO_PATHWAYS,
                       elsewhere: str = "silence") -> List[Dict]:
    """The negative ``condition`` (one of :func:`listening_conditions`) heard by one audio pathway only and
    by all pathways but one: ``2 * len(pathways)`` conditions, each with ``"pathways"`` (those that hear
    the sound) and ``"elsewhere"`` (what the others hear):

    * ``elsewhere="silence"``: named ``"{name}@{pathways joined by +}"`` (``offscreen_scene@query``,
      ``offscreen_scene@pixel+abti``); every pathway hears a negative, the ground truth stays empty, and
      the false-positive rates next to ``name`` (every pathway) and ``silence`` (none) say which pathway's
      hearing of the sound draws the masks. ``condition`` may not be silence here.
    * ``elsewhere="own"``: named ``"own+{name}@{...}"`` (``own+silence@query``: the clip's own audio
      except that the query pathway hears silence); positive conditions scored against the clip's own
      ground truth, as the pathway swap is: what a pathway's sound is needed for.

    docs/listening.md has the measurements."""
    if not condition.get("negative") or condition.get("pathways"):
        raise ValueError(f"negatives by pathway need a negative condition (not already by pathway); got {condition}")
    if elsewhere not in PATHWAY_ELSEWHERE:
        raise ValueError(f"elsewhere must be one of {PATHWAY_ELSEWHERE}, got {elsewhere!r}")
    if elsewhere == "silence" and condition["kind"] == "silence":
        raise ValueError("silence heard by some pathways and silence elsewhere is plain silence; "
                         "by pathway with silence elsewhere needs a negative with a sound")
    unknown = [p for p in pathways if p not in AUDIO_PATHWAYS]
    if unknown or len(set(pathways)) != len(pathways) or len(pathways) < 2:
        raise ValueError(f"pathways must be two or more distinct names from {AUDIO_PATHWAYS}, got {list(pathways)}")
    ordered = [p for p in AUDIO_PATHWAYS if p in pathways]
    heard_sets = [[p] for p in ordered] + [[q for q in ordered if q != p] for p in ordered]
    prefix = "" if elsewhere == "silence" else "own+"
    return [{**condition, "name": f"{prefix}{condition['name']}@{'+'.join(heard)}", "pathways": heard,
             "elsewhere": elsewhere, "negative": elsewhere == "silence"} for heard in heard_sets]


_DATASET_OF_KIND = {
    "own": lambda test, cond, seed: test,
    "swap": lambda test, cond, seed: register_audio_swapped(test, seed=seed),
}


def condition_dataset(test_name: str, condition: Dict, seed: int = 0) -> str:
    """Registered dataset name of ``condition`` on ``test_name`` (registers the swapped / negative copy; a
    condition with ``"pathways"`` (:func:`pathway_conditions`) hears its negative in those pathways only)."""
    make = _DATASET_OF_KIND.get(condition["kind"])
    if make is not None:
        return make(test_name, condition, seed)
    if condition.get("pathways"):
        return register_pathway_negative_audio(test_name, condition["kind"], condition["level_db"],
                                               condition["pathways"], seed=seed, elsewhere=condition["elsewhere"])
    return register_negative_audio(test_name, condition["kind"], condition["level_db"], seed=seed)


class MinAreaRule(nn.Module):
    """``model`` followed by the minimum-area rule: in each output's ``"sound_probs"`` ``[T, H, W]``, the
    frames whose mask (``probs > threshold``) covers at most ``min_area`` of the frame get probability 0
    everywhere, so every evaluator (the official M_J / M_F at 0.5 and the listening metrics at ``threshold``)
    sees them empty."""

    def __init__(self, model: nn.Module, *, threshold: float, min_area: float):
        super().__init__()
        check_min_area(min_area, "MinAreaRule")
        self.model = model
        self.threshold = float(threshold)
        self.min_area = float(min_area)

    def forward(self, inputs):
        outputs = []
        for inp, out in zip(inputs, self.model(inputs)):
            if "sound_probs" not in out:
                raise ValueError(f"{inp.get('video_id', '?')}: the minimum-area rule needs 'sound_probs' "
                                 f"(S4 / MS3 models); the output has {sorted(out)}")
            probs = out["sound_probs"]  # [T, H, W]
            fg = probs > self.threshold  # [T, H, W] bool
            emptied = fg.flatten(1).any(1) & ~drop_small_masks(fg, self.min_area).flatten(1).any(1)  # [T]
            outputs.append({**out, "sound_probs": probs.masked_fill(emptied[:, None, None], 0.0)})
        return outputs


def evaluate_listening(cfg, model, test_name: str, conditions: Sequence[Dict], seed: int = 0,
                       min_area: float = 0.0) -> Dict[str, Dict]:
    """Run ``model`` on ``test_name`` under each condition; ``min_area`` > 0 evaluates ``model`` followed by
    the minimum-area rule (:class:`MinAreaRule`).

    Returns:
        condition name -> ``{"condition", "dataset", "clips" (ListeningEvaluator records), "listening"
        (its summary), "avs" (AVSEvaluator's M_J / M_F, positive conditions only)}``.
    """
    model.eval()
    threshold = cfg.MODEL.AQFORMER.MASK_THRESHOLD
    if min_area:
        model = MinAreaRule(model, threshold=threshold, min_area=min_area)
    results = {}
    for cond in conditions:
        dataset = condition_dataset(test_name, cond, seed)
        listening = ListeningEvaluator(threshold=threshold)
        evaluators = [listening] if cond["negative"] else [listening, AVSEvaluator(dataset, output_dir=None)]
        loader = AQFormerTrainer.build_test_loader(cfg, dataset)
        res = inference_on_dataset(model, loader, DatasetEvaluators(evaluators))
        results[cond["name"]] = {"condition": dict(cond), "dataset": dataset, "clips": listening.clips,
                                 "listening": res["listening"], "avs": res.get("avs")}
        logger.info("listening %s: %s", cond["name"], res)
    return results


def _interval(values: np.ndarray, num_resamples: int, seed: int) -> List[float]:
    return list(bootstrap_interval(lambda idx: float(values[idx].mean()), len(values),
                                   num_resamples=num_resamples, seed=seed))


def summarise_listening(results: Dict[str, Dict], *, num_resamples: int = 1000, seed: int = 0,
                        own: str = "own") -> Dict[str, Dict]:
    """Per condition: ``foreground_frames`` (FPR on negatives), ``mean_area``, positives' ``mIoU`` / ``Fscore``,
    negatives' ``listening_score`` against the ``own`` condition's M_J, each with a 95 % bootstrap range over
    clips (``*_ci``; the score resamples a clip's own-audio and negative results together).

    When some frames of the ``own`` condition have an empty ground truth (nothing sounds then), one more row,
    ``own_empty_gt`` (negative, ``derived_from`` ``own``), gives the FPR and mean area on exactly those
    frames (:func:`~aqformer_d2.evaluation.listening.empty_ground_truth_rates`), ``num_clips`` /
    ``num_frames`` counting the clips that have such frames and the frames, and ranges resampling those clips;
    it has no listening score (its positive M_J would be scored on the same clips' other frames)."""
    own_clips = {c["video_id"]: c for c in results[own]["clips"]}
    summary = {}
    for name, res in results.items():
        clips = res["clips"]
        fg = np.array([np.mean(c["any_fg"]) for c in clips])  # [N] share of frames with foreground, per clip
        area = np.array([np.mean(c["area"]) for c in clips])  # [N]
        row: Dict[str, Optional[object]] = {
            "negative": res["condition"]["negative"], "num_clips": len(clips),
            "foreground_frames": res["listening"]["foreground_frames"], "foreground_frames_ci": _interval(fg, num_resamples, seed),
            "mean_area": res["listening"]["mean_area"], "mean_area_ci": _interval(area, num_resamples, seed),
        }
        if res["avs"] is not None:
            iou = np.array([np.mean(c["iou"]) for c in clips if c["iou"]])
            row.update(mIoU=res["avs"]["mIoU"], Fscore=res["avs"]["Fscore"], mIoU_ci=_interval(iou, num_resamples, seed))
        if res["condition"]["negative"]:
            pos = np.array([np.mean(own_clips[c["video_id"]]["iou"]) for c in clips])  # [N] paired by clip
            row["listening_score"] = listening_score(float(pos.mean()), float(fg.mean()))
            row["listening_score_ci"] = list(bootstrap_interval(
                lambda idx: listening_score(float(pos[idx].mean()), float(fg[idx].mean())), len(clips),
                num_resamples=num_resamples, seed=seed))
        summary[name] = row
        if name == own:
            empty_row = _empty_ground_truth_row(clips, num_resamples, seed)
            if empty_row is not None:
                summary[own + "_empty_gt"] = empty_row
    return summary


def _empty_ground_truth_row(clips: Sequence[Dict], num_resamples: int, seed: int) -> Optional[Dict]:
    """The ``own_empty_gt`` row of :func:`summarise_listening`, or None when no frame has an empty ground truth."""
    frames, fg, area = empty_ground_truth_rates(clips)  # [N] each
    keep = frames > 0
    if not keep.any():
        return None
    frames, fg, area = frames[keep], fg[keep], area[keep]  # [M] clips with such frames

    def ratio(num: np.ndarray):
        return lambda idx: float(num[idx].sum() / frames[idx].sum())

    every = np.arange(len(frames))
    return {"negative": True, "derived_from": "own", "num_clips": int(keep.sum()), "num_frames": int(frames.sum()),
            "foreground_frames": ratio(fg)(every),
            "foreground_frames_ci": list(bootstrap_interval(ratio(fg), len(frames), num_resamples=num_resamples, seed=seed)),
            "mean_area": ratio(area)(every),
            "mean_area_ci": list(bootstrap_interval(ratio(area), len(frames), num_resamples=num_resamples, seed=seed))}
