"""SynthAVS benchmark: does the tiny AQFormer find the sounding objects, and does it need the audio?

    .venv/bin/python -m bench.synthavs_benchmark [--tasks s4 ms3] [--iters 1500] [--controls swap blind vanilla]
    .venv/bin/python -m bench.synthavs_benchmark --tasks avss [--iters N] [--controls swap blind]

For each task (SynthAVS-S4, SynthAVS-MS3, SynthAVS-semantic = "avss"), in one run:
- full:    tiny AQFormer trained --iters iterations, evaluated on the test split (M_J = mIoU, M_F = Fscore);
- swap:    the SAME trained model evaluated with each test clip's audio replaced by another clip's audio;
- blind:   the model trained (and evaluated) with the audio input zeroed (INPUT.AUDIO.ZERO_INPUT);
- vanilla: the vanilla-object-query variant (S4 / MS3: MODEL.AQ_TRANSFORMER_DECODER.QUERY_TYPE vanilla;
           AVSS: MODEL.AQ_SEMANTIC.QUERY_CONDITIONING vanilla), trained and evaluated like the full model.
AVSS (configs/synthavs/aqformer_tiny_avss.yaml on SynthAVS-semantic, generated at AVSS_IMAGE_SIZE if absent) is
scored with the official AVSS metric (TEST.AVSS_PROTOCOL official: mIoU over the K = 9 classes with background,
F, mIoU without background, per-class IoU and frames per class; bench/avss_report.py has the goals and tables).
Swapped audio comes from a clip of the same length (5 or 10 frames).
Prints markdown tables and writes bench/results/synthavs_benchmark_{tasks}.json. Wall times are for 2 threads.
"""
import argparse
import json
import logging
import os
import sys
import time

import torch

from aqformer_d2.data.datasets import get_synthavs_root, register_audio_swapped
from aqformer_d2.data.datasets.register_synthavs import get_synthavs_avss_root
from aqformer_d2.data.synthavs import BENCHMARK_PARAMS, generate_synthavs, generate_synthavs_semantic
from aqformer_d2.engine import evaluate, train_and_evaluate
from bench.avss_report import avss_goal_lines, avss_row, per_class_table
from bench.common import RESULTS, bench_cfg, machine

CONTROLS = ("swap", "blind", "vanilla")
# SynthAVS-semantic as the AVSS benchmark generates it: the default clip counts (v1s 300/30/30, v1m 300/30/30,
# v2 150/15/15) at the tiny config's INPUT.IMAGE_SIZE.
AVSS_IMAGE_SIZE = 128
AVSS_PARAMS = {"seed": 0, "image_size": AVSS_IMAGE_SIZE}
# Per task: the dataset-root key and the override of the "vanilla" control.
ROOT_KEYS = {"s4": "DATASETS.SYNTHAVS_ROOT", "ms3": "DATASETS.SYNTHAVS_ROOT", "avss": "DATASETS.SYNTHAVS_AVSS_ROOT"}
VANILLA = {"s4": ["MODEL.AQ_TRANSFORMER_DECODER.QUERY_TYPE", "vanilla"],
           "ms3": ["MODEL.AQ_TRANSFORMER_DECODER.QUERY_TYPE", "vanilla"],
           "avss": ["MODEL.AQ_SEMANTIC.QUERY_CONDITIONING", "vanilla"]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", choices=("s4", "ms3", "avss"), default=["s4", "ms3"])
    p.add_argument("--iters", type=int, default=None, help="training iterations per run (default: config MAX_ITER)")
    p.add_argument("--controls", nargs="*", choices=CONTROLS, default=list(CONTROLS))
    p.add_argument("--no-full", action="store_true",
                   help="run only the controls that train their own model (blind, vanilla), not the full model")
    p.add_argument("--avss-root", default=None,
                   help="SynthAVS-semantic folder (generated there if absent; default $DETECTRON2_DATASETS/SynthAVS_semantic)")
    p.add_argument("--avss-clips", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"), default=None,
                   help="SynthAVS-semantic clips per subset and split (default: v1s 300/30/30, v1m 300/30/30, v2 150/15/15)")
    p.add_argument("--seed", type=int, default=0,
                   help="the run's seed: cfg.SEED (sample stream, per-step seeds) and the model's initialisation")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output", default=str(RESULTS))
    p.add_argument("opts", nargs=argparse.REMAINDER, help="extra config overrides for every run")
    return p.parse_args(argv)


def _row(task: str, variant: str, cfg, minutes: float, results: dict) -> dict:
    row = {"task": task, "variant": variant, "seed": int(cfg.SEED), "iterations": cfg.SOLVER.MAX_ITER,
           "clips_per_iteration": cfg.SOLVER.IMS_PER_BATCH, "train_minutes": round(minutes, 2)}
    if task == "avss":
        row.update(avss_row(results))
    else:
        row.update(mIoU=results["avs"]["mIoU"], Fscore=results["avs"]["Fscore"])
    return row


def run_one(task: str, variant: str, args, root: str) -> dict:
    out_dir = os.path.join(args.output, "synthavs_runs", f"{task}_{variant}_seed{args.seed}")
    opts = ["OUTPUT_DIR", out_dir, ROOT_KEYS[task], root, "SEED", str(args.seed)] + list(args.opts)
    if args.iters is not None:
        opts += ["SOLVER.MAX_ITER", str(args.iters)]
    if variant == "blind":
        opts += ["INPUT.AUDIO.ZERO_INPUT", "True"]
    if variant == "vanilla":
        opts += VANILLA[task]
    cfg = bench_cfg(os.path.join("configs", "synthavs", f"aqformer_tiny_{task}.yaml"), opts, device=None)
    torch.manual_seed(args.seed)  # the model's initialisation
    model, results, seconds = train_and_evaluate(cfg)
    rows = [_row(task, variant, cfg, seconds / 60, results)]
    if variant == "full" and "swap" in args.controls:
        swapped = register_audio_swapped(cfg.DATASETS.TEST[0], seed=0)
        rows.append(_row(task, "swap (full model, other clip's audio)", cfg, 0.0, evaluate(cfg, model, [swapped])))
    return rows


def avss_params(args) -> dict:
    """Generator parameters of SynthAVS-semantic: :data:`AVSS_PARAMS` and ``--avss-clips``."""
    sizes = {} if args.avss_clips is None else dict(zip(("n_train", "n_val", "n_test"), args.avss_clips))
    return dict(AVSS_PARAMS, **sizes)


def dataset_root(task: str, args) -> str:
    """The task's SynthAVS, generated with the benchmark's parameters if absent (a re-run does nothing)."""
    if task == "avss":
        root = args.avss_root or get_synthavs_avss_root()
        generate_synthavs_semantic(root, progress=True, **avss_params(args))
        return root
    root = get_synthavs_root()
    generate_synthavs(root, progress=True, **BENCHMARK_PARAMS)
    return root


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(args.threads)
    os.makedirs(args.output, exist_ok=True)
    roots = {task: dataset_root(task, args) for task in args.tasks}
    rows = []
    load_start = os.getloadavg()
    start = time.perf_counter()
    for task in args.tasks:
        variants = ([] if args.no_full else ["full"]) + [c for c in args.controls if c != "swap"]
        if args.no_full and "swap" in args.controls:
            raise SystemExit("--no-full: the swap control evaluates the full model; drop 'swap' from --controls")
        for variant in variants:
            rows.extend(run_one(task, variant, args, roots[task]))
    total = time.perf_counter() - start
    report = {
        "command": ".venv/bin/python -m bench.synthavs_benchmark " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": dict(machine(), torch_threads=args.threads),
        # 1/5/15-minute load averages at the start and end: a busy machine's times are not idle-machine times
        "load_average": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in os.getloadavg()]},
        "synthavs": BENCHMARK_PARAMS,
        "synthavs_semantic": avss_params(args) if "avss" in args.tasks else None,
        "total_minutes": round(total / 60, 1),
        "rows": rows,
    }
    tag = "_".join(args.tasks) + ("_" + "_".join(args.controls) if args.no_full else "") + f"_seed{args.seed}"
    with open(os.path.join(args.output, f"synthavs_benchmark_{tag}.json"), "w") as f:
        json.dump(report, f, indent=2)
    m = report["machine"]
    print(f"\n{report['command']}\n{m['cpu']} ({m['isa']}), {m['cpus']} cores, torch threads {args.threads}; "
          f"total {report['total_minutes']} min\n")
    print("| task | variant | iterations x clips | train min | M_J (mIoU) | M_F (Fscore) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['variant']} | {r['iterations']} x {r['clips_per_iteration']} | {r['train_minutes']} "
              f"| {r['mIoU']:.3f} | {r['Fscore']:.3f} |")
    avss_rows = [r for r in rows if r["task"] == "avss"]
    if avss_rows:
        print("\nAVSS, official protocol (mIoU and F over all K classes, background included):\n")
        print("\n".join(per_class_table(avss_rows)))
        print("\n" + "\n".join(avss_goal_lines(avss_rows, report["total_minutes"], m["isa"])))
    return report


if __name__ == "__main__":
    main()
