"""AVSSEvaluator: the official AVSBench-semantic metric (avss_metrics.py) as a detectron2 DatasetEvaluator.

Inputs are the AVSSClipMapper's clip dicts ("label_files" [T] with None for unlabelled / padded
frames, "frame_valid" bool [T], "height", "width", "video_id", "subset"); outputs are
``{"sem_seg": float [T, K, height, width]}`` class scores (the predicted class is the argmax).
Ground truth is read from the label PNGs at the original resolution.

Which frames are scored is the protocol (``TEST.AVSS_PROTOCOL``):

- ``official``: every labelled real frame AND every padded frame (frame_valid False), whose ground
  truth is all background, as AVSBench's test.py scores the 10-frame padded clips; the numbers
  compare with published AVSS tables.
- ``real_frames``: labelled real frames only (COMBO-AVS).

Real frames without a label (v1s training clips) are never scored. Per clip only per-class sums
are kept; :meth:`evaluate` all-reduces them over processes (float64 sums in another order differ
by round-off only) and gathers the clip names to refuse clips evaluated twice.

Results: ``{"avss_<protocol>": {"mIoU", "Fscore", "mIoU_noBg", "Fscore_noBg", "mIoU_script_noBg",
"Fscore_script_noBg", "num_clips", "num_frames", "num_padded_frames", "num_classes_counted",
"IoU-<class>", "F-<class>", "frames-<class>" (frames with the class in the ground truth)}}``; the
result key names the protocol, so every printed table says which one it is.
"""
from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from tabulate import tabulate

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ..data.datasets.register_avss import avss_palette, load_label2idx, read_avss_label
from .avss_metrics import argmax_labels, avss_scores, class_areas, class_sums

__all__ = ["AVSS_PROTOCOLS", "AVSS_METRICS_JSON", "AVSSEvaluator", "avss_result_key", "build_avss_evaluator"]

logger = logging.getLogger(__name__)

AVSS_PROTOCOLS = ("official", "real_frames")
AVSS_METRICS_JSON = "avss_metrics.json"
_SUM_KEYS = ("iou_sum", "f_sum", "count", "gt_frames")


def avss_result_key(protocol: str) -> str:
    """Task key of the results, e.g. "avss_official"."""
    return f"avss_{protocol}"


class AVSSEvaluator(DatasetEvaluator):
    """Official AVSS mIoU / F-score (module docstring), summed over processes."""

    def __init__(
        self,
        dataset_name: str,
        *,
        protocol: str = "official",
        output_dir: Optional[str] = None,
        distributed: bool = True,
        num_classes: Optional[int] = None,
        class_names: Optional[List[str]] = None,
    ):
        """
        Args:
            dataset_name: registered AVSS dataset; its metadata gives ``num_classes`` and the class
                names (``stuff_classes``, else read from ``label2idx_file``).
            protocol: "official" or "real_frames" (module docstring).
            output_dir: where avss_metrics.json goes (results + per-class table); None: nothing written.
            distributed: all-reduce the class sums over processes in :meth:`evaluate`.
            num_classes, class_names: override the metadata (tests, unregistered data).
        """
        if protocol not in AVSS_PROTOCOLS:
            raise ValueError(f"AVSS protocol {protocol!r}; expected one of {AVSS_PROTOCOLS}.")
        meta = MetadataCatalog.get(dataset_name)
        self._dataset_name = dataset_name
        self._protocol = protocol
        self._output_dir = output_dir
        self._distributed = distributed
        self._k = int(num_classes if num_classes is not None else meta.num_classes)
        if class_names is None:
            class_names = meta.get("stuff_classes") or load_label2idx(meta.label2idx_file, self._k)
        if len(class_names) != self._k:
            raise ValueError(f"AVSSEvaluator: {len(class_names)} class names for K = {self._k} classes.")
        self._names = list(class_names)
        self._palette = avss_palette(self._k)
        self.reset()

    def reset(self) -> None:
        self._sums = {k: np.zeros(self._k, dtype=np.float64 if k.endswith("sum") else np.int64) for k in _SUM_KEYS}
        self._clips: List[str] = []
        self._frames = self._padded = self._unlabelled = 0

    def _scored_frames(self, inp: dict) -> List[int]:
        """Indices of the frames the protocol scores (labelled real frames, + padded ones if official)."""
        labels = inp["label_files"]
        valid = [bool(v) for v in inp["frame_valid"]]
        scored = [t for t, p in enumerate(labels) if valid[t] and p is not None]
        if self._protocol == "official":
            scored += [t for t in range(len(labels)) if not valid[t]]
        return sorted(scored)

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs):
            self._process_one(inp, out)

    def _process_one(self, inp: dict, out: dict) -> None:
        video = f"{inp.get('subset')}/{inp['video_id']}"
        labels = list(inp["label_files"])
        scores = out["sem_seg"]
        if isinstance(scores, torch.Tensor):
            scores = scores.detach().to("cpu", torch.float32)
        h, w = int(inp["height"]), int(inp["width"])
        expected = (len(labels), self._k, h, w)
        if tuple(scores.shape) != expected:
            raise ValueError(f"Clip {video!r}: sem_seg has shape {list(scores.shape)}, expected {list(expected)} "
                             "([T, K, height, width]).")
        if len(inp["frame_valid"]) != len(labels):
            raise ValueError(f"Clip {video!r}: {len(inp['frame_valid'])} frame_valid flags for {len(labels)} frames.")
        scored = self._scored_frames(inp)
        gts = []
        for t in scored:
            if labels[t] is None:  # padded frame: background everywhere
                gts.append(np.zeros((h, w), dtype=np.int64))
                continue
            gt = read_avss_label(labels[t], self._palette)  # [H0, W0]
            if gt.shape != (h, w):
                raise ValueError(f"Label {labels[t]} is {gt.shape[0]}x{gt.shape[1]}, but clip {video!r} is {h}x{w}.")
            gts.append(gt)
        self._clips.append(video)
        self._unlabelled += sum(1 for t, p in enumerate(labels) if bool(inp["frame_valid"][t]) and p is None)
        if not scored:
            return
        pred = argmax_labels(scores[scored])  # [S, H0, W0]
        sums = class_sums(*class_areas(pred, np.stack(gts), self._k))
        for k in _SUM_KEYS:
            self._sums[k] += sums[k]
        self._frames += len(scored)
        self._padded += sum(1 for t in scored if labels[t] is None)

    def _reduce(self) -> None:
        """All-reduce the class sums and counters over processes; check no clip was seen twice."""
        group = comm._get_global_gloo_group()
        flat = torch.from_numpy(np.concatenate([self._sums[k].astype(np.float64) for k in _SUM_KEYS]
                                               + [np.array([self._frames, self._padded, self._unlabelled], np.float64)]))
        dist.all_reduce(flat, group=group)  # float64 [4K + 3]; integer parts stay exact below 2^53
        parts = np.split(flat.numpy(), [self._k * (i + 1) for i in range(len(_SUM_KEYS))])
        for k, part in zip(_SUM_KEYS, parts):
            self._sums[k] = part if k.endswith("sum") else np.rint(part).astype(np.int64)
        self._frames, self._padded, self._unlabelled = (int(round(v)) for v in parts[-1])
        self._clips = [c for clips in comm.all_gather(self._clips, group=group) for c in clips]

    def evaluate(self):
        if self._distributed and comm.get_world_size() > 1:
            comm.synchronize()
            self._reduce()
            if not comm.is_main_process():
                return {}
        dup = sorted({c for c in self._clips if self._clips.count(c) > 1})
        if dup:
            raise ValueError(f"AVSSEvaluator: clips evaluated more than once: {dup[:5]} ({len(dup)} in all).")
        if self._frames == 0:
            raise ValueError(f"AVSSEvaluator ({self._dataset_name}): no labelled frame was scored.")
        s = avss_scores(self._sums["iou_sum"], self._sums["f_sum"], self._sums["count"])
        res: Dict[str, float] = OrderedDict()
        for key in ("mIoU", "Fscore", "mIoU_noBg", "Fscore_noBg", "mIoU_script_noBg", "Fscore_script_noBg"):
            res[key] = s[key]
        res.update(num_clips=len(self._clips), num_frames=self._frames, num_padded_frames=self._padded,
                   num_classes_counted=int((self._sums["count"] > 0).sum()))
        for j, name in enumerate(self._names):
            res[f"IoU-{name}"] = float(s["IoU"][j])
            res[f"F-{name}"] = float(s["F"][j])
            res[f"frames-{name}"] = int(self._sums["gt_frames"][j])
        self._log_table(s)
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            path = os.path.join(self._output_dir, AVSS_METRICS_JSON)
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                json.dump({"dataset": self._dataset_name, "protocol": self._protocol, "results": res}, f, indent=1)
            os.replace(path + ".tmp", path)
        return OrderedDict({avss_result_key(self._protocol): res})

    def _log_table(self, s: dict) -> None:
        rows = [(j, n, s["IoU"][j], s["F"][j], int(self._sums["gt_frames"][j]), int(self._sums["count"][j]))
                for j, n in enumerate(self._names)]
        table = tabulate(rows, headers=["index", "class", "IoU", "F", "frames in GT", "frames counted"],
                         floatfmt=".4f", tablefmt="github")
        logger.info(
            "AVSS (%s, protocol %s): mIoU %.4f, F %.4f (mean over all %d classes, background included); "
            "mIoU without background %.4f; %d frames (%d padded), %d real frames without label not scored\n%s",
            self._dataset_name, self._protocol, s["mIoU"], s["Fscore"], self._k, s["mIoU_noBg"], self._frames,
            self._padded, self._unlabelled, table,
        )


def build_avss_evaluator(cfg, dataset_name: str, output_dir: Optional[str] = None) -> AVSSEvaluator:
    """AVSSEvaluator with ``cfg.TEST.AVSS_PROTOCOL``; output_dir defaults to ``cfg.OUTPUT_DIR/inference``."""
    if output_dir is None:
        output_dir = os.path.join(cfg.OUTPUT_DIR, "inference")
    return AVSSEvaluator(dataset_name, protocol=cfg.TEST.AVSS_PROTOCOL, output_dir=output_dir)
