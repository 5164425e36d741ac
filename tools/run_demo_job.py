#!/usr/bin/env python
"""The README's main job: SynthAVS -> train the tiny AQFormer on the CPU -> evaluate -> pictures.

    python tools/run_demo_job.py --output output/synthavs_demo [--task s4|ms3] [--iters N]

1. generates SynthAVS under $DETECTRON2_DATASETS/SynthAVS (default datasets/SynthAVS) if absent;
2. trains configs/synthavs/aqformer_tiny_{task}.yaml with detectron2's trainer on the CPU;
3. evaluates on the SynthAVS test split (M_J = mIoU, M_F = Fscore, the AVSBench definitions);
4. writes to --output: summary.json (test metrics, timing), metrics.json (detectron2 log), loss_curve.png, overlays.png (ground truth vs prediction on a few
   test clips), and the checkpoint model_final.pth.
"""
import argparse
import json
import logging
import os
import sys
import time

import aqformer_d2  # noqa: F401  (registration; before detectron2.engine)
import numpy as np
import torch
from detectron2.data import DatasetCatalog

from aqformer_d2.data.datasets import get_synthavs_root
from aqformer_d2.data.datasets.register_avsbench import read_avs_mask
from aqformer_d2.data.synthavs import BENCHMARK_PARAMS, generate_synthavs
from aqformer_d2.engine import build_cfg, read_loss_history, train_and_evaluate
from aqformer_d2.inference import TorchSegmenter, load_frame_files, predict_video, read_rgb
from aqformer_d2.utils.visualize import clip_overlay_grid, save_loss_curve

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="output/synthavs_demo", help="folder for metrics, pictures, checkpoint")
    p.add_argument("--task", choices=("s4", "ms3"), default="s4")
    p.add_argument("--iters", type=int, default=None, help="training iterations (default: the config's MAX_ITER)")
    p.add_argument("--num-overlays", type=int, default=4, help="test clips shown in overlays.png")
    p.add_argument("--synthavs-clips", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"), default=None,
                   help="clips per split of a smaller SynthAVS (for a quick try; default: the full benchmark)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="extra config overrides KEY VALUE ...")
    return p.parse_args(argv)


def make_overlays(cfg, model, dataset_name: str, count: int, path: str) -> None:
    """Ground truth vs thresholded prediction on the first ``count`` clips of ``dataset_name``: each clip's
    frame files and sound track run through the package's video loop (``predict_video``), as the demo runs
    a folder of frames and an audio file."""
    size = int(cfg.INPUT.IMAGE_SIZE)
    segmenter = TorchSegmenter(model=model, height=size, width=size, input_format=cfg.INPUT.FORMAT,
                               source=f"the model trained in {cfg.OUTPUT_DIR}")
    clips = []
    for d in DatasetCatalog.get(dataset_name)[:count]:
        video = load_frame_files(d["frame_files"], d["audio_wav_file"], segmenter)
        probs = np.concatenate([p.probs for p in predict_video(segmenter, video)])  # [T, H0, W0]
        frames = np.stack([read_rgb(f) for f in d["frame_files"]])  # [T, H0, W0, 3] RGB
        mask_files = d.get("mask_files") or [None] * len(frames)
        gt = [None if m is None else read_avs_mask(m) > 0 for m in mask_files]  # [H0, W0] each
        clips.append({"frames": frames, "gt": gt, "pred": probs > cfg.MODEL.AQFORMER.MASK_THRESHOLD,
                      "title": d["video_id"]})
    clip_overlay_grid(clips).save(path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    log = logging.getLogger("run_demo_job")
    out = os.path.abspath(args.output)
    os.makedirs(out, exist_ok=True)

    root = get_synthavs_root()
    t0 = time.perf_counter()
    sizes = {}
    if args.synthavs_clips is not None:
        sizes = dict(zip(("n_train", "n_val", "n_test"), args.synthavs_clips))
    manifest = generate_synthavs(root, progress=True, **BENCHMARK_PARAMS, **sizes)
    log.info("SynthAVS at %s (%s, %.1f s)", root, "already there" if manifest.get("skipped") else "generated",
             time.perf_counter() - t0)

    opts = ["OUTPUT_DIR", out, "DATASETS.SYNTHAVS_ROOT", root] + list(args.opts)
    if args.iters is not None:
        opts += ["SOLVER.MAX_ITER", str(args.iters)]
    config_file = os.path.join(REPO, "configs", "synthavs", f"aqformer_tiny_{args.task}.yaml")
    cfg = build_cfg(config_file, opts)
    torch.manual_seed(cfg.SEED if cfg.SEED >= 0 else 0)
    model, results, train_seconds = train_and_evaluate(cfg)

    test_name = cfg.DATASETS.TEST[0]
    history = {k: read_loss_history(out, k) for k in ("total_loss", "loss_bce", "loss_dice", "loss_sim")}
    save_loss_curve(history, os.path.join(out, "loss_curve.png"), title=f"tiny AQFormer on SynthAVS-{args.task.upper()}")
    make_overlays(cfg, model, test_name, args.num_overlays, os.path.join(out, "overlays.png"))

    summary = {
        "command": " ".join([os.path.basename(sys.executable), "tools/run_demo_job.py"] + list(argv or sys.argv[1:])),
        "config_file": os.path.relpath(config_file, REPO),
        "task": args.task,
        "iterations": cfg.SOLVER.MAX_ITER,
        "clips_per_iteration": cfg.SOLVER.IMS_PER_BATCH,
        "train_seconds": round(train_seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "test_dataset": test_name,
        "results": results,
        "files": ["summary.json", "metrics.json", "loss_curve.png", "overlays.png", "model_final.pth"],
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    avs = results["avs"]
    log.info("SynthAVS-%s test: M_J (mIoU) %.4f  M_F (Fscore) %.4f after %d iterations in %.1f min; outputs in %s",
             args.task.upper(), avs["mIoU"], avs["Fscore"], cfg.SOLVER.MAX_ITER, train_seconds / 60, out)
    return summary


if __name__ == "__main__":
    main()
