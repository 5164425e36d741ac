"""Audio-pathway attribution: where does a trained AQFormer listen?

    .venv/bin/python -m bench.audio_attribution [--tasks ms3 s4] [--work-dir output/ablations] [--swap-seeds 0 1 2]

Audio enters AQFormer three ways (docs/interfaces.md, "Audio pathways"): eq. (1)-(2) in the pixel decoder
("pixel"), ABTI ("abti") and the audio queries A^0 of the transformer decoder ("query"). This evaluates ONE
trained full model on the test split with each clip's audio replaced by another clip's (a fixed-seed
derangement) in one pathway at a time, and in all three at once, and reports M_J / M_F of each against
the model with its own audio. The models are the seed-0 full models bench/ablations.py saves under
WORK_DIR/models/{task}_full_seed0.{pth,yaml}; any other model trained with this code works with
--weights / --config.

Writes OUTPUT/attribution.json and OUTPUT/attribution.md (default docs/measurements/attribution).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Dict, List, Optional, Sequence

from bench.common import bench_cfg

logger = logging.getLogger("audio_attribution")

# (name, pathways swapped): None = own audio; "all" swaps the audio files themselves.
CONDITIONS = (
    ("own audio", ()),
    ("pixel decoder, eq. (1)-(2)", ("pixel",)),
    ("ABTI, eq. (9)-(12)", ("abti",)),
    ("audio queries A^0 (eq. 7 acts on their refinements)", ("query",)),
    ("all three", ("pixel", "abti", "query")),
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", choices=("s4", "ms3"), default=["ms3", "s4"])
    p.add_argument("--work-dir", default=os.path.join("output", "ablations"),
                   help="bench/ablations.py's --work-dir (holds models/{task}_full_seed0.pth/.yaml)")
    p.add_argument("--weights", default=None, help="a model state dict / checkpoint (one task only)")
    p.add_argument("--config", default=None, help="its config yaml (one task only, with --weights)")
    p.add_argument("--swap-seeds", nargs="+", type=int, default=[0, 1, 2],
                   help="seeds of the derangement that picks each clip's donor; results are averaged")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output", default=os.path.join("docs", "measurements", "attribution"))
    args = p.parse_args(argv)
    if (args.weights is None) != (args.config is None):
        p.error("--weights and --config go together")
    if args.weights is not None and len(args.tasks) != 1:
        p.error("--weights / --config evaluate one model: give exactly one --tasks")
    return args


def model_files(args, task: str):
    if args.weights is not None:
        return args.weights, args.config
    base = os.path.join(args.work_dir, "models", f"{task}_full_seed0")
    pth, yaml_path = base + ".pth", base + ".yaml"
    for path in (pth, yaml_path):
        if not os.path.isfile(path):
            raise SystemExit(
                f"{path} does not exist: train the full model first with "
                f"`.venv/bin/python -m bench.ablations --tasks {task} --rows d:n3 --seeds 0 --rerun` "
                f"(add the protocol options you used; --work-dir {args.work_dir})"
            )
    return pth, yaml_path


def load_model(cfg, weights: str):
    import torch
    from aqformer_d2.modeling import build_aq_model

    model = build_aq_model(cfg)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a detectron2 checkpoint (model_final.pth)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SystemExit(f"{weights}: does not match the model of its config: missing {missing[:5]}..., "
                         f"unexpected {unexpected[:5]}...")
    model.eval()
    return model


def attribute(task: str, args) -> Dict:
    from aqformer_d2.data.datasets import register_audio_swapped
    from aqformer_d2.engine import evaluate

    weights, config = model_files(args, task)
    cfg = bench_cfg(config, device=None)
    model = load_model(cfg, weights)
    test = cfg.DATASETS.TEST[0]
    rows = []
    for name, pathways in CONDITIONS:
        per_seed = []
        for seed in (args.swap_seeds if pathways else [None]):
            if not pathways:
                dataset = test
            elif len(pathways) == 3:
                dataset = register_audio_swapped(test, seed=seed)  # the audio files themselves
            else:
                dataset = register_audio_swapped(test, seed=seed, pathways=pathways)
            t0 = time.perf_counter()
            res = evaluate(cfg, model, [dataset])["avs"]
            per_seed.append({"swap_seed": seed, "mIoU": res["mIoU"], "Fscore": res["Fscore"],
                             "seconds": round(time.perf_counter() - t0, 1)})
            logger.info("%s | %s | swap seed %s: M_J %.4f M_F %.4f", task, name, seed, res["mIoU"], res["Fscore"])
        rows.append({"condition": name, "pathways": list(pathways), "runs": per_seed,
                     "MJ": sum(r["mIoU"] for r in per_seed) / len(per_seed),
                     "MF": sum(r["Fscore"] for r in per_seed) / len(per_seed)})
    return {"task": task, "weights": weights, "config": config, "test_dataset": test, "rows": rows}


def markdown(results: Sequence[Dict], swap_seeds: Sequence[int]) -> str:
    lines = [f"M_J / M_F on the test split; swapped rows are means over {len(swap_seeds)} derangements "
             f"(seeds {list(swap_seeds)}, min-max in brackets).", "",
             "| task | audio of another clip in | M_J | M_F | Δ M_J vs own audio |", "|---|---|---|---|---|"]
    for r in results:
        own = r["rows"][0]["MJ"]
        for row in r["rows"]:
            mj = [x["mIoU"] for x in row["runs"]]
            rng = f" [{min(mj):.3f}-{max(mj):.3f}]" if len(mj) > 1 else ""
            delta = "-" if not row["pathways"] else f"{row['MJ'] - own:+.3f}"
            where = "nothing (own audio)" if not row["pathways"] else row["condition"]
            lines.append(f"| {r['task'].upper()} | {where} | {row['MJ']:.3f}{rng} | {row['MF']:.3f} | {delta} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> List[Dict]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    results = [attribute(task, args) for task in args.tasks]
    os.makedirs(args.output, exist_ok=True)
    cmd = ".venv/bin/python -m bench.audio_attribution " + " ".join(argv if argv is not None else sys.argv[1:])
    with open(os.path.join(args.output, "attribution.json"), "w") as f:
        json.dump({"command": cmd, "loadavg_end": list(os.getloadavg()), "results": results}, f, indent=2)
    text = f"Produced by `{cmd}`.\n\n" + markdown(results, args.swap_seeds)
    with open(os.path.join(args.output, "attribution.md"), "w") as f:
        f.write(text)
    print(text)
    return results


if __name__ == "__main__":
    main()
