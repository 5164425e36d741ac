"""AVSEvaluator: the AVSBench protocol (M_J, M_F) as a detectron2 DatasetEvaluator.

Ground truth is read from ``inputs[i]["mask_files"]`` at the original resolution; frames whose
entry is None (no annotation, e.g. S4 train frames 2..5) are NOT evaluated. Predictions are
``outputs[i]["sound_probs"]`` float ``[T, height, width]`` probabilities. Per video only compact
statistics are kept on the CPU (per-frame IoUs, the summed F curve, per-threshold counts), never masks.

Results (``{"avs": {...}}``, values in [0, 1] like the AVSBench/AQFormer tables):

- ``mIoU``: official M_J (per-frame IoU with the empty-GT rule, mean over the video's evaluated
  frames, mean over videos).
- ``Fscore``: official M_F (per video: mean F curve over its frames with non-empty GT, max over the
  255 thresholds, 0 without such a frame; mean over videos).
- ``mIoU_frames``: mean of the per-frame IoUs over all evaluated frames of the dataset.
- ``mIoU_pooled``: sum of intersections / sum of unions (plain foreground, no empty-GT rule) over all
  evaluated frames.
- ``Fscore_frames``: max over thresholds of the mean F curve over all non-empty-GT frames of the
  dataset (independent of how frames are grouped into videos / batches).
- ``Fscore_pooled``: max over thresholds of the F-measure of the dataset-summed TP / positives / GT
  pixels over all evaluated frames.
- ``num_videos``, ``num_frames``: videos / frames evaluated; ``num_unlabelled_frames``: frames skipped
  for lack of a mask.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ..data.datasets.register_avsbench import read_avs_mask
from .metrics import (
    FSCORE_NUM_THRESHOLDS,
    binarize,
    fscore_curve_from_counts,
    mask_iou_per_frame,
    threshold_counts,
)

__all__ = ["AVSEvaluator", "build_avs_evaluator", "PER_VIDEO_JSON", "PNG_DIR"]

logger = logging.getLogger(__name__)

PER_VIDEO_JSON = "avs_metrics_per_video.json"
PNG_DIR = "avs_predictions"


class AVSEvaluator(DatasetEvaluator):
    """AVSBench M_J / M_F evaluator (see module docstring for the result keys)."""

    def __init__(
        self,
        dataset_name: str,
        *,
        output_dir: Optional[str] = None,
        distributed: bool = True,
        save_png: bool = False,
        mask_threshold: float = 0.5,
    ):
        """
        Args:
            dataset_name: registered dataset (its metadata's ``task`` / ``split`` name the PNG layout).
            output_dir: where the per-video JSON (and PNGs) go; None: nothing is written.
            distributed: gather the per-video statistics of all ranks to rank 0 in :meth:`evaluate`.
            save_png: write predicted masks (prob > mask_threshold, 0/255 'L' PNGs) under
                ``output_dir/avs_predictions`` in the AVSBench gt_masks layout
                (S4: ``{split}/{category}/{name}/{name}_{i}.png``, MS3: ``{split}/{name}/{name}_{i}.png``, i = 1..T).
            mask_threshold: binarisation threshold of the saved PNGs only; the metrics always use the
                official 0.5.
        """
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._save_png = save_png
        self._mask_threshold = float(mask_threshold)
        meta = MetadataCatalog.get(dataset_name)
        self._task = meta.get("task")
        self._split = meta.get("split")
        if save_png:
            if output_dir is None:
                raise ValueError("AVSEvaluator: save_png=True needs an output_dir.")
            if self._task not in ("s4", "ms3") or self._split is None:
                raise ValueError(
                    f"AVSEvaluator: dataset {dataset_name!r} has no AVS task/split metadata; cannot lay out PNGs."
                )
        self._records: List[dict] = []

    def reset(self) -> None:
        self._records = []

    # ------------------------------------------------------------------ state (for gather / merge)
    def state(self) -> List[dict]:
        """The per-video statistics processed so far (what :meth:`evaluate` gathers)."""
        return list(self._records)

    def merge_states(self, states: Sequence[List[dict]]) -> None:
        """Replace this evaluator's statistics by the union of several evaluators' :meth:`state`."""
        self._records = list(itertools.chain.from_iterable(states))

    # ------------------------------------------------------------------ process
    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs):
            self._records.append(self._process_one(inp, out))

    def _process_one(self, inp: dict, out: dict) -> dict:
        video_id = inp["video_id"]
        mask_files: List[Optional[str]] = list(inp["mask_files"])
        probs = out["sound_probs"]
        if not isinstance(probs, torch.Tensor):
            probs = torch.as_tensor(probs)
        probs = probs.detach().to("cpu", torch.float32)  # [T, H0, W0]
        height, width = int(inp["height"]), int(inp["width"])
        if probs.dim() != 3 or probs.shape[0] != len(mask_files) or tuple(probs.shape[1:]) != (height, width):
            raise ValueError(
                f"Video {video_id!r}: sound_probs has shape {list(probs.shape)}, expected "
                f"[{len(mask_files)}, {height}, {width}] ([T, height, width])."
            )
        if not torch.isfinite(probs).all():
            raise ValueError(f"Video {video_id!r}: sound_probs contains NaN or infinite values.")

        if self._save_png:
            self._write_pngs(inp, probs)

        frame_iou, frame_index = [], []
        f_sum = np.zeros(FSCORE_NUM_THRESHOLDS, dtype=np.float64)  # summed F curves of valid frames
        n_f = 0
        tp_all = np.zeros(FSCORE_NUM_THRESHOLDS, dtype=np.int64)
        pos_all = np.zeros(FSCORE_NUM_THRESHOLDS, dtype=np.int64)
        gt_all = inter_all = union_all = 0
        for t, path in enumerate(mask_files):
            if path is None:
                continue
            gt = torch.from_numpy(read_avs_mask(path))  # [H0, W0] uint8 {0, 1}
            if tuple(gt.shape) != (height, width):
                raise ValueError(
                    f"Ground-truth mask {path} is {gt.shape[0]}x{gt.shape[1]}, but video {video_id!r} "
                    f"has height x width {height}x{width}."
                )
            s = probs[t]  # [H0, W0]
            pred = binarize(s)  # [H0, W0] bool
            frame_iou.append(float(mask_iou_per_frame(pred[None], gt[None])[0]))
            frame_index.append(t)
            g = gt.bool()
            inter_all += int((pred & g).sum())
            union_all += int((pred | g).sum())
            num_gt = int(g.sum())
            gt_all += num_gt
            tp, pos = threshold_counts(s, g)  # [255] each
            tp_all += tp.numpy()
            pos_all += pos.numpy()
            if num_gt > 0:
                f_sum += fscore_curve_from_counts(tp, pos, num_gt).numpy()
                n_f += 1
        return {
            "key": inp["frame_files"][0],
            "video_id": video_id,
            "frame_index": frame_index,
            "frame_iou": frame_iou,
            "f_curve_sum": f_sum,
            "num_f_frames": n_f,
            "num_unlabelled": len(mask_files) - len(frame_index),
            "tp": tp_all,
            "pos": pos_all,
            "num_gt": gt_all,
            "inter": inter_all,
            "union": union_all,
        }

    def _write_pngs(self, inp: dict, probs: torch.Tensor) -> None:
        name = inp["video_id"]
        if self._task == "s4":
            # frame path: .../visual_frames/{split}/{category}/{name}/{name}_{i}.png
            category = os.path.basename(os.path.dirname(os.path.dirname(inp["frame_files"][0])))
            out_dir = os.path.join(self._output_dir, PNG_DIR, self._split, category, name)
        else:
            out_dir = os.path.join(self._output_dir, PNG_DIR, self._split, name)
        os.makedirs(out_dir, exist_ok=True)
        masks = (probs > self._mask_threshold).numpy().astype(np.uint8) * 255  # [T, H0, W0]
        for t in range(masks.shape[0]):
            Image.fromarray(masks[t], mode="L").save(os.path.join(out_dir, f"{name}_{t + 1}.png"))

    # ------------------------------------------------------------------ evaluate
    def evaluate(self):
        if self._distributed:
            comm.synchronize()
            states = comm.gather(self._records, dst=0)
            if not comm.is_main_process():
                return {}
            records = list(itertools.chain.from_iterable(states))
        else:
            records = self._records
        return OrderedDict({"avs": self._compute(records)})

    def _compute(self, records: List[dict]) -> Dict[str, float]:
        keys = [r["key"] for r in records]
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})
            raise ValueError(f"AVSEvaluator: videos processed more than once: {dup[:5]} ({len(dup)} in all).")
        records = sorted(records, key=lambda r: r["key"])  # order-independent summation
        num_unlabelled = sum(r["num_unlabelled"] for r in records)
        if num_unlabelled:
            logger.info(
                "AVSEvaluator (%s): %d frames without a ground-truth mask were not evaluated.",
                self._dataset_name,
                num_unlabelled,
            )
        evaluated = [r for r in records if r["frame_iou"]]
        if len(evaluated) < len(records):
            logger.warning(
                "AVSEvaluator (%s): %d videos have no annotated frame and are left out.",
                self._dataset_name,
                len(records) - len(evaluated),
            )
        if not evaluated:
            raise ValueError(f"AVSEvaluator ({self._dataset_name}): no annotated frame was evaluated.")

        per_video = []
        for r in evaluated:
            j = float(np.mean(r["frame_iou"]))
            f = float((r["f_curve_sum"] / r["num_f_frames"]).max()) if r["num_f_frames"] else 0.0
            per_video.append((r, j, f))

        all_iou = np.array([x for r in evaluated for x in r["frame_iou"]], dtype=np.float64)
        f_frames = sum(r["num_f_frames"] for r in evaluated)
        f_curve_total = np.sum([r["f_curve_sum"] for r in evaluated], axis=0)  # [255]
        tp = np.sum([r["tp"] for r in evaluated], axis=0)
        pos = np.sum([r["pos"] for r in evaluated], axis=0)
        num_gt = sum(r["num_gt"] for r in evaluated)
        inter = sum(r["inter"] for r in evaluated)
        union = sum(r["union"] for r in evaluated)
        results = {
            "mIoU": float(np.mean([j for _, j, _ in per_video])),
            "Fscore": float(np.mean([f for _, _, f in per_video])),
            "mIoU_frames": float(all_iou.mean()),
            "mIoU_pooled": float(inter / union) if union else 1.0,
            "Fscore_frames": float((f_curve_total / f_frames).max()) if f_frames else 0.0,
            "Fscore_pooled": float(fscore_curve_from_counts(tp, pos, num_gt).max()),
            "num_videos": len(evaluated),
            "num_frames": int(all_iou.size),
            "num_unlabelled_frames": num_unlabelled,
        }
        logger.info("AVSEvaluator (%s): %s", self._dataset_name, results)
        if self._output_dir:
            self._write_json(results, per_video)
        return results

    def _write_json(self, results: Dict[str, float], per_video) -> None:
        os.makedirs(self._output_dir, exist_ok=True)
        path = os.path.join(self._output_dir, PER_VIDEO_JSON)
        videos = [
            {
                "video_id": r["video_id"],
                "first_frame": r["key"],
                "J": j,
                "F": f,
                "frame_index": r["frame_index"],
                "frame_iou": r["frame_iou"],
                "num_f_frames": r["num_f_frames"],
            }
            for r, j, f in per_video
        ]
        with open(path, "w", encoding="utf-8") as fp:
            json.dump({"dataset": self._dataset_name, "summary": results, "videos": videos}, fp, indent=1)
        logger.info("AVSEvaluator: per-video metrics written to %s", path)


def build_avs_evaluator(cfg, dataset_name: str, output_dir: Optional[str] = None) -> AVSEvaluator:
    """AVSEvaluator from a config: PNG export per ``cfg.TEST.AVS_SAVE_PNG`` with threshold
    ``cfg.MODEL.AQFORMER.MASK_THRESHOLD``; output_dir defaults to ``cfg.OUTPUT_DIR/inference``."""
    if output_dir is None:
        output_dir = os.path.join(cfg.OUTPUT_DIR, "inference")
    return AVSEvaluator(
        dataset_name,
        output_dir=output_dir,
        distributed=True,
        save_png=bool(cfg.TEST.AVS_SAVE_PNG),
        mask_threshold=cfg.MODEL.AQFORMER.MASK_THRESHOLD,
    )
