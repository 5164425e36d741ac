"""Does a trained model stay silent when nothing on screen sounds? (docs/listening.md)

Evaluates ONE trained model on every test clip with each audio condition: its own audio; silence (zeros
through the log-mel front end); white and pink noise at each --levels-db (dB relative to the clip's own
soundtrack); an off-screen sound (a SynthAVS category absent from the clip, as loud as the soundtrack;
SynthAVS only); another clip's audio (the swap control, scored against the clip's own ground truth).
Where some frames of the own-audio condition have an empty ground truth (nothing sounds then:
SynthAVS-MS3's silent seconds), a row ``own_empty_gt`` gives the share of those frames with foreground.

Per condition: the share of frames with any predicted foreground at the model's MASK_THRESHOLD (the
false-positive rate on negatives), the mean predicted foreground area, official M_J / M_F on the positive
conditions, and on negatives the listening score (harmonic mean of own-audio M_J and 1 - FPR), each with a
95 % bootstrap range over clips. ``--min-area A`` evaluates the model followed by the minimum-area rule
(frames whose mask covers at most A of the frame emptied, as ``demo/demo.py --min-area``). ``--by-pathway
CONDITION`` adds that negative heard by one audio pathway only and by all pathways but one, silence in the
others (``offscreen_scene@query``, ``offscreen_scene@pixel+abti``, ...): which pathway's hearing of the sound
draws the masks; ``--own-with CONDITION`` adds the clip's own audio with that negative (silence too) in one
pathway only and in all but one (``own+silence@query``, ...), scored against the own ground truth: what
each pathway's sound is needed for. Writes {output}/{condition}.json (summary + per-clip records),
{output}/listening.json (all summaries, the command, config and weights) and {output}/listening.md.

    python -m bench.listening --config-file configs/synthavs/aqformer_tiny_s4.yaml --weights out/model_final.pth \\
        --output docs/measurements/listening/s4_full_seed0 [KEY VALUE ...]
"""
import argparse
import json
import logging
import os
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="the model's config (e.g. the config.yaml of its training)")
    p.add_argument("--weights", required=True, help="the trained checkpoint (model_final.pth or a state dict)")
    p.add_argument("--dataset", default=None, help="test dataset (default: the config's first DATASETS.TEST)")
    p.add_argument("--levels-db", nargs="+", type=float, default=[0.0, -20.0],
                   help="noise levels in dB relative to each clip's soundtrack")
    p.add_argument("--noise-kinds", nargs="+", default=["white_noise", "pink_noise"])
    p.add_argument("--no-offscreen", action="store_true", help="leave out the off-screen sound (non-SynthAVS data)")
    p.add_argument("--only", nargs="+", default=None, metavar="CONDITION",
                   help="evaluate only these conditions (by name, e.g. offscreen_scene); 'own' is always kept, "
                        "the listening score needs it")
    p.add_argument("--by-pathway", nargs="+", default=[], metavar="CONDITION",
                   help="also evaluate these negative conditions (e.g. offscreen_scene) heard by each audio pathway "
                        "only and by all but each one, silence in the others (docs/listening.md)")
    p.add_argument("--own-with", nargs="+", default=[], metavar="CONDITION",
                   help="also evaluate the clip's own audio with these negative conditions (e.g. silence) in each "
                        "audio pathway only and in all but each one, scored against the own ground truth")
    p.add_argument("--seed", type=int, default=0, help="seed of the negatives and of the swap derangement")
    p.add_argument("--min-area", type=float, default=0.0, metavar="A",
                   help="evaluate with the minimum-area rule: frames whose mask covers at most this share of the "
                        "frame count as empty (default 0: off; docs/listening.md)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples over clips")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output", default=os.path.join("output", "listening"))
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides (e.g. DATASETS.SYNTHAVS_ROOT)")
    return p.parse_args(argv)


def markdown(summary, meta) -> str:
    lines = [f"Listening evaluation of `{meta['weights']}` on `{meta['dataset']}` "
             f"(threshold {meta['mask_threshold']}"
             + (f"; minimum-area rule {meta['min_area']:g}" if meta["min_area"] else "")
             + f"; ranges: 95 % bootstrap over clips, {meta['resamples']} resamples).",
             "", "| condition | frames with foreground (FPR on negatives) | mean area | M_J | M_F | listening score |",
             "|---|---|---|---|---|---|"]

    def ci(row, key):
        lo, hi = row[key + "_ci"]
        return f"{row[key]:.3f} [{lo:.3f}, {hi:.3f}]"

    for name, row in summary.items():
        mj = ci(row, "mIoU") if "mIoU" in row else "-"
        mf = f"{row['Fscore']:.3f}" if "Fscore" in row else "-"
        score = ci(row, "listening_score") if "listening_score" in row else "-"
        lines.append(f"| {name} | {ci(row, 'foreground_frames')} | {ci(row, 'mean_area')} | {mj} | {mf} | {score} |")
    if "own_empty_gt" in summary:
        row = summary["own_empty_gt"]
        lines += ["", f"own_empty_gt: the {row['num_frames']} frames (in {row['num_clips']} clips) whose ground truth "
                      "is empty under the clip's own audio (nothing sounds then); ranges resample those clips."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    if not 0.0 <= args.min_area < 1.0:
        raise SystemExit(f"--min-area must be a share of the frame in [0, 1), got {args.min_area}")
    import torch
    from detectron2.utils.logger import setup_logger

    from aqformer_d2.checkpoint import AQCheckpointer
    from aqformer_d2.engine import (
        AQFormerTrainer, build_cfg, evaluate_listening, listening_conditions, pathway_conditions, summarise_listening,
    )

    torch.set_num_threads(args.threads)
    setup_logger(name="aqformer_d2", abbrev_name="aq")
    cfg = build_cfg(args.config_file, list(args.opts) + ["MODEL.WEIGHTS", args.weights])
    if not (args.dataset or cfg.DATASETS.TEST):
        raise SystemExit(f"{args.config_file}: DATASETS.TEST is empty; name the test dataset with --dataset")
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    model = AQFormerTrainer.build_model(cfg)
    AQCheckpointer(model, trust_pickle=cfg.MODEL.WEIGHTS_TRUST_PICKLE).load(args.weights)
    conditions = listening_conditions(args.levels_db, args.noise_kinds, offscreen=not args.no_offscreen)
    if args.only:
        names = [c["name"] for c in conditions]
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            raise SystemExit(f"--only: no condition named {unknown}; the conditions of these options are {names}")
        conditions = [c for c in conditions if c["name"] == "own" or c["name"] in args.only]
    by_name = {c["name"]: c for c in conditions}
    for option, names, elsewhere in (("--by-pathway", args.by_pathway, "silence"), ("--own-with", args.own_with, "own")):
        usable = [n for n, c in by_name.items() if c["negative"] and (elsewhere == "own" or n != "silence")]
        unusable = [n for n in names if n not in usable]
        if unusable:
            raise SystemExit(f"{option}: {unusable} are not among the evaluated conditions it can take: {usable}")
        conditions += [c for n in names for c in pathway_conditions(by_name[n], elsewhere=elsewhere)]
    start = time.perf_counter()
    results = evaluate_listening(cfg, model, dataset, conditions, seed=args.seed, min_area=args.min_area)
    summary = summarise_listening(results, num_resamples=args.resamples, seed=args.seed)
    meta = {"command": "python -m bench.listening " + " ".join(argv if argv is not None else sys.argv[1:]),
            "config_file": args.config_file, "weights": args.weights, "dataset": dataset, "seed": args.seed,
            "resamples": args.resamples, "mask_threshold": cfg.MODEL.AQFORMER.MASK_THRESHOLD, "min_area": args.min_area,
            "threads": args.threads, "seconds": round(time.perf_counter() - start, 1)}
    os.makedirs(args.output, exist_ok=True)
    for name, res in results.items():
        with open(os.path.join(args.output, f"{name}.json"), "w") as fh:
            json.dump({"summary": summary[name], "condition": res["condition"], "dataset": res["dataset"],
                       "clips": res["clips"], **meta}, fh, indent=1)
    with open(os.path.join(args.output, "listening.json"), "w") as fh:
        json.dump({"summary": summary, **meta}, fh, indent=1)
    table = markdown(summary, meta)
    with open(os.path.join(args.output, "listening.md"), "w") as fh:
        fh.write(table)
    print(table)
    logging.getLogger("aqformer_d2").info("listening evaluation written to %s (%.1f s)", args.output, meta["seconds"])
    return summary


if __name__ == "__main__":
    main()
