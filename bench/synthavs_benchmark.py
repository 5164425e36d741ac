"""SynthAVS benchmark: does the tiny AQFormer find the sounding objects, and does it need the audio?

    .venv/bin/python -m bench.synthavs_benchmark [--tasks s4 ms3] [--iters 1500] [--controls swap blind vanilla]

For each task (SynthAVS-S4, SynthAVS-MS3), in one run:
- full:    tiny AQFormer trained --iters iterations, evaluated on the test split (M_J = mIoU, M_F = Fscore);
- swap:    the SAME trained model evaluated with each test clip's audio replaced by another clip's audio;
- blind:   the model trained (and evaluated) with the audio input zeroed (INPUT.AUDIO.ZERO_INPUT);
- vanilla: the vanilla-object-query variant (MODEL.AQ_TRANSFORMER_DECODER.QUERY_TYPE vanilla), trained
           and evaluated like the full model.
Prints a markdown table and writes bench/results/synthavs_benchmark_{tasks}.json. Wall times are for 2 threads.
"""
import argparse
import json
import logging
import os
import sys
import time

import torch

from aqformer_d2.data.datasets import get_synthavs_root, register_audio_swapped
from aqformer_d2.data.synthavs import BENCHMARK_PARAMS, generate_synthavs
from aqformer_d2.engine import evaluate, train_and_evaluate
from bench.common import RESULTS, bench_cfg, machine

CONTROLS = ("swap", "blind", "vanilla")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", choices=("s4", "ms3"), default=["s4", "ms3"])
    p.add_argument("--iters", type=int, default=None, help="training iterations per run (default: config MAX_ITER)")
    p.add_argument("--controls", nargs="*", choices=CONTROLS, default=list(CONTROLS))
    p.add_argument("--no-full", action="store_true",
                   help="run only the controls that train their own model (blind, vanilla), not the full model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output", default=str(RESULTS))
    p.add_argument("opts", nargs=argparse.REMAINDER, help="extra config overrides for every run")
    return p.parse_args(argv)


def run_one(task: str, variant: str, args, root: str) -> dict:
    out_dir = os.path.join(args.output, "synthavs_runs", f"{task}_{variant}")
    opts = ["OUTPUT_DIR", out_dir, "DATASETS.SYNTHAVS_ROOT", root] + list(args.opts)
    if args.iters is not None:
        opts += ["SOLVER.MAX_ITER", str(args.iters)]
    if variant == "blind":
        opts += ["INPUT.AUDIO.ZERO_INPUT", "True"]
    if variant == "vanilla":
        opts += ["MODEL.AQ_TRANSFORMER_DECODER.QUERY_TYPE", "vanilla"]
    cfg = bench_cfg(os.path.join("configs", "synthavs", f"aqformer_tiny_{task}.yaml"), opts, device=None)
    torch.manual_seed(0)
    model, results, seconds = train_and_evaluate(cfg)
    row = {"task": task, "variant": variant, "iterations": cfg.SOLVER.MAX_ITER,
           "clips_per_iteration": cfg.SOLVER.IMS_PER_BATCH, "train_minutes": round(seconds / 60, 2),
           "mIoU": results["avs"]["mIoU"], "Fscore": results["avs"]["Fscore"]}
    rows = [row]
    if variant == "full" and "swap" in args.controls:
        swapped = register_audio_swapped(cfg.DATASETS.TEST[0], seed=0)
        res = evaluate(cfg, model, [swapped])
        rows.append({"task": task, "variant": "swap (full model, other clip's audio)", "iterations": row["iterations"],
                     "clips_per_iteration": row["clips_per_iteration"], "train_minutes": 0.0,
                     "mIoU": res["avs"]["mIoU"], "Fscore": res["avs"]["Fscore"]})
    return rows


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(args.threads)
    os.makedirs(args.output, exist_ok=True)
    root = get_synthavs_root()
    generate_synthavs(root, progress=True, **BENCHMARK_PARAMS)
    rows = []
    start = time.perf_counter()
    for task in args.tasks:
        variants = ([] if args.no_full else ["full"]) + [c for c in args.controls if c != "swap"]
        if args.no_full and "swap" in args.controls:
            raise SystemExit("--no-full: the swap control evaluates the full model; drop 'swap' from --controls")
        for variant in variants:
            rows.extend(run_one(task, variant, args, root))
    total = time.perf_counter() - start
    report = {
        "command": ".venv/bin/python -m bench.synthavs_benchmark " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": dict(machine(), torch_threads=args.threads),
        "synthavs": BENCHMARK_PARAMS,
        "total_minutes": round(total / 60, 1),
        "rows": rows,
    }
    tag = "_".join(args.tasks) + ("_" + "_".join(args.controls) if args.no_full else "")
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


if __name__ == "__main__":
    main()
