"""The AVSS rows of bench.synthavs_benchmark: figures from the evaluator's results, the goals, the per-class
table, the per-class chart and class-coloured overlays of a trained model.

    .venv/bin/python -m bench.avss_report RECORD.json [RECORD.json ...] [--chart PNG] [--weights model_final.pth --overlays PNG]

``RECORD.json`` is what ``bench.synthavs_benchmark --tasks avss`` writes. ``--chart``: per-class IoU (official
protocol) of every AVSS row, one bar group per class, with the frames each class appears in. ``--overlays``:
test clips of SynthAVS-semantic with ground truth and the model's prediction coloured by class (the dataset
palette, "stuff_colors"), with a legend of class names; the config is the record's full-model run
(``OUTPUT_DIR/config.yaml``) unless ``--config`` names one.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Dict, List, Sequence

import numpy as np

# The goals of the AVSS benchmark (official mIoU, background included).
GOAL_FULL_MIOU = 0.60
GOAL_SWAP_DROP = 0.25
GOAL_BLIND_DROP = 0.20
GOAL_MINUTES_AVX512 = 30.0
PROTOCOL_KEY = "avss_official"


def avss_row(results: Dict) -> Dict:
    """The figures of one evaluation ``{"avss_official": {...}}`` (AVSSEvaluator): mIoU, Fscore (all K classes,
    background included), mIoU_noBg, Fscore_noBg, frame counts and ``per_class`` {name: {IoU, F, frames}}."""
    if set(results) != {PROTOCOL_KEY}:
        raise ValueError(f"avss_row: expected the official protocol's results {{{PROTOCOL_KEY!r}: ...}}, got "
                         f"{sorted(results)} (set TEST.AVSS_PROTOCOL official)")
    res = results[PROTOCOL_KEY]
    names = [k[len("IoU-"):] for k in res if k.startswith("IoU-")]
    return {
        "protocol": "official",
        **{k: float(res[k]) for k in ("mIoU", "Fscore", "mIoU_noBg", "Fscore_noBg")},
        **{k: int(res[k]) for k in ("num_clips", "num_frames", "num_padded_frames")},
        "per_class": {n: {"IoU": float(res[f"IoU-{n}"]), "F": float(res[f"F-{n}"]), "frames": int(res[f"frames-{n}"])}
                      for n in names},
    }


def _short(variant: str) -> str:
    return variant.split(" ")[0]


def by_variant(rows: Sequence[Dict]) -> Dict[str, List[Dict]]:
    """Variant short name ("full", "swap", "blind", "vanilla") -> its rows in seed order, one per seed (a row
    without "seed" is seed 0). Two rows of one variant and seed are refused: they would be averaged twice."""
    out: Dict[str, List[Dict]] = {}
    for r in rows:
        out.setdefault(_short(r["variant"]), []).append(r)
    for name, group in out.items():
        seeds = [int(r.get("seed", 0)) for r in group]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"avss_report: variant {name!r} has several rows of seed(s) "
                             f"{sorted(s for s in set(seeds) if seeds.count(s) > 1)}; give each record once")
        group.sort(key=lambda r: int(r.get("seed", 0)))
    return out


def seed_mean(group: Sequence[Dict]) -> Dict:
    """The mean over seeds of one variant's rows: mIoU, Fscore, mIoU_noBg, Fscore_noBg and per-class IoU /
    F, with "seeds" (the seeds) and "mIoU_seeds" (each seed's mIoU) for the spread."""
    keys = ("mIoU", "Fscore", "mIoU_noBg", "Fscore_noBg")
    names = list(group[0]["per_class"])
    return {
        "variant": group[0]["variant"],
        **{k: float(np.mean([r[k] for r in group])) for k in keys},
        "per_class": {n: {"IoU": float(np.mean([r["per_class"][n]["IoU"] for r in group])),
                          "F": float(np.mean([r["per_class"][n]["F"] for r in group])),
                          "frames": group[0]["per_class"][n]["frames"]} for n in names},
        "seeds": [int(r.get("seed", 0)) for r in group],
        "mIoU_seeds": [float(r["mIoU"]) for r in group],
    }


def per_class_table(rows: Sequence[Dict]) -> List[str]:
    """Markdown: one line per class (frames with the class in the ground truth, IoU of each variant: the mean
    over its seeds), then the means (mIoU with and without background) and F; with more than one seed, a last
    line gives each seed's mIoU."""
    means = [seed_mean(g) for g in by_variant(rows).values()]
    names = list(means[0]["per_class"])
    several = any(len(m["seeds"]) > 1 for m in means)
    columns = [f"IoU {_short(m['variant'])}" + (f" (mean of {len(m['seeds'])} seeds)" if several else "")
               for m in means]
    head = "| class | frames | " + " | ".join(columns) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(means)]
    for n in names:
        lines.append(f"| {n} | {means[0]['per_class'][n]['frames']} | "
                     + " | ".join(f"{m['per_class'][n]['IoU']:.3f}" for m in means) + " |")
    for key, label in (("mIoU", "**mIoU (background included)**"), ("mIoU_noBg", "mIoU without background"),
                       ("Fscore", "F (background included)")):
        lines.append(f"| {label} | | " + " | ".join(f"{m[key]:.3f}" for m in means) + " |")
    if several:
        lines.append("| mIoU per seed | | " + " | ".join(
            " / ".join(f"{s}: {v:.3f}" for s, v in zip(m["seeds"], m["mIoU_seeds"])) for m in means) + " |")
    return lines


def _each_seed(values: Sequence) -> str:
    """" (seed 0: 0.612, seed 1: 0.634)" for (seed, value) pairs; "" for one seed."""
    if len(values) < 2:
        return ""
    return " (" + ", ".join(f"seed {s}: {v:.3f}" for s, v in values) + ")"


def avss_goal_lines(rows: Sequence[Dict], total_minutes: float, isa: str) -> List[str]:
    """One line per goal: the measured figure (the mean over seeds, and each seed's when there are several),
    the goal and met / not met. A goal is met only when it is met in every seed; a drop is taken per seed
    (full model minus control of the same seed). A goal whose row is missing is said to be not measured."""
    groups = by_variant(rows)
    lines = []
    full = groups.get("full")
    if full is None:
        return ["goals: not measured (no full-model row)"]
    full_by_seed = {int(r.get("seed", 0)): r["mIoU"] for r in full}
    vals = sorted(full_by_seed.items())
    ok = all(v >= GOAL_FULL_MIOU for _, v in vals)
    lines.append(f"goal full mIoU >= {GOAL_FULL_MIOU}: {np.mean([v for _, v in vals]):.3f}{_each_seed(vals)} -> "
                 f"{'met' if ok else 'NOT met'}")
    for name, goal in (("swap", GOAL_SWAP_DROP), ("blind", GOAL_BLIND_DROP)):
        control = {int(r.get("seed", 0)): r["mIoU"] for r in groups.get(name, [])}
        paired = sorted(set(control) & set(full_by_seed))
        if not paired:
            lines.append(f"goal {name} >= {goal} below the full model: not measured")
            continue
        drops = [(s, full_by_seed[s] - control[s]) for s in paired]
        mean_control = np.mean([control[s] for s in paired])
        mean_drop = np.mean([d for _, d in drops])
        met = all(d >= goal for _, d in drops)
        lines.append(f"goal {name} >= {goal} below the full model: {mean_control:.3f}, {mean_drop:.3f} below"
                     f"{_each_seed(drops)} -> {'met' if met else 'NOT met'}")
    when = "met" if total_minutes <= GOAL_MINUTES_AVX512 else "NOT met"
    if isa != "AVX-512":
        when = f"not measurable here ({isa} machine; the goal is for AVX-512, expect about 4x longer on AVX2)"
    lines.append(f"goal whole command <= {GOAL_MINUTES_AVX512:g} min on 2 AVX-512 cores: {total_minutes} min on "
                 f"{isa} -> {when}")
    return lines


def plot_per_class(rows: Sequence[Dict], path: str, title: str) -> None:
    """Bar chart of the per-class IoU of each variant (PNG at ``path``): the mean over seeds, with a bar from
    the lowest to the highest seed when there are several."""
    from bench.common import BarSeries, grouped_bar_chart

    groups = list(by_variant(rows).values())
    names = list(groups[0][0]["per_class"])
    series = []
    for group in groups:
        m = seed_mean(group)
        ious = np.array([[r["per_class"][n]["IoU"] for n in names] for r in group])  # [seeds, classes]
        mean = ious.mean(0)
        err = None if len(group) < 2 else np.stack([mean - ious.min(0), ious.max(0) - mean])
        seeds = "" if len(group) < 2 else f", {len(group)} seeds"
        series.append(BarSeries(f"{_short(m['variant'])} (mIoU {m['mIoU']:.3f}{seeds})", mean, err))
    ticks = [f"{n}\n{groups[0][0]['per_class'][n]['frames']} fr." for n in names]
    grouped_bar_chart(path, ticks, series, ylabel="IoU (official protocol)", title=title)


def overlay_figure(cfg, weights: str, path: str, clips: int = 3, cell: int = 112) -> None:
    """Ground truth and prediction of the first test clip of each subset (up to ``clips``), coloured by class on
    the dimmed frames, with a legend of class names (PNG at ``path``)."""
    import torch
    from PIL import Image, ImageDraw

    from aqformer_d2.checkpoint import AQCheckpointer
    from aqformer_d2.data import build_aq_dataset_mapper
    from aqformer_d2.data.datasets.register_avss import avss_palette, read_avss_label
    from aqformer_d2.engine import AQFormerTrainer
    from aqformer_d2.utils.visualize import overlay_classes
    from detectron2.data import DatasetCatalog, MetadataCatalog

    name = cfg.DATASETS.TEST[0]
    meta = MetadataCatalog.get(name)
    dicts = DatasetCatalog.get(name)
    picked = [next(d for d in dicts if d["subset"] == s) for s in ("v1s", "v1m", "v2")][:clips]
    model = AQFormerTrainer.build_model(cfg)
    AQCheckpointer(model).load(weights)
    model.eval()
    mapper = build_aq_dataset_mapper(cfg, is_train=False)
    classes, colors = list(meta.stuff_classes), np.asarray(meta.stuff_colors)
    palette = avss_palette(len(classes))
    frames = max(d["num_frames"] for d in picked)
    label_h, legend_h = 14, 22
    canvas = Image.new("RGB", (frames * cell, len(picked) * 2 * (cell + label_h) + legend_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, d in enumerate(picked):
        clip = mapper(d)
        with torch.no_grad():
            pred = model([clip])[0]["sem_seg"].argmax(1).numpy()  # [T, height, width]
        for r, label in enumerate(("ground truth", "prediction")):
            top = (2 * c + r) * (cell + label_h)
            draw.text((2, top + 1), f"{d['subset']}/{d['video_id']}: {label}", fill=(0, 0, 0))
            for t in range(d["num_frames"]):
                frame = np.asarray(Image.open(d["frame_files"][t]).convert("RGB"))
                if r == 0:
                    lab = d["label_files"][t]
                    cls = read_avss_label(lab, palette) if lab is not None else np.zeros(frame.shape[:2], np.int64)
                else:
                    cls = pred[t]
                dimmed = (frame.astype(np.float32) * 0.45 + 70).astype(np.uint8)  # so the class colours stand out
                tile = Image.fromarray(overlay_classes(dimmed, cls, colors, alpha=0.8)).resize((cell, cell), Image.NEAREST)
                canvas.paste(tile, (t * cell, top + label_h))
    x, y = 4, canvas.height - legend_h + 4
    for k, n in enumerate(classes[1:], start=1):
        draw.rectangle([x, y, x + 12, y + 12], fill=tuple(int(v) for v in colors[k]))
        draw.text((x + 16, y + 1), n, fill=(0, 0, 0))
        x += 22 + 7 * len(n)
    canvas.save(path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("records", nargs="+",
                   help="JSON written by bench.synthavs_benchmark --tasks avss; several (e.g. one per --seed, or a "
                        "--no-full blind run) are read as one benchmark: figures are means over seeds, minutes are "
                        "per seed")
    p.add_argument("--chart", help="per-class IoU chart (PNG)")
    p.add_argument("--weights", help="trained full model, for --overlays")
    p.add_argument("--config", help="config of --weights (default: the full-model run's OUTPUT_DIR/config.yaml)")
    p.add_argument("--overlays", help="class-coloured overlays of test clips (PNG)")
    args = p.parse_args(argv)
    records = []
    for path in args.records:
        with open(path) as f:
            records.append(json.load(f))
    rows = [r for rec in records for r in rec["rows"] if r["task"] == "avss"]
    if not rows:
        raise SystemExit(f"{args.records}: no AVSS rows (run bench.synthavs_benchmark --tasks avss)")
    isas = {rec["machine"]["isa"] for rec in records}
    # the command's time for one seed: the sum over the records of each seed, the longest seed
    per_seed: Dict[int, float] = {}
    for rec in records:
        seeds = {int(r.get("seed", 0)) for r in rec["rows"]}
        for sd in seeds:
            per_seed[sd] = per_seed.get(sd, 0.0) + rec["total_minutes"]
    minutes = round(max(per_seed.values()), 1)
    print("\n".join(per_class_table(rows)))
    print("\n".join(avss_goal_lines(rows, minutes, " / ".join(sorted(isas)))))
    if args.chart:
        its = sorted({f"{r['iterations']} iterations x {r['clips_per_iteration']} clips" for r in rows})
        plot_per_class(rows, args.chart, f"SynthAVS-semantic test, official AVSS metric (tiny model, {', '.join(its)})")
        print(f"wrote {args.chart}")
    if args.overlays:
        if not args.weights:
            raise SystemExit("--overlays needs --weights")
        from aqformer_d2.engine import build_cfg

        config = args.config or os.path.join(os.path.dirname(args.weights), "config.yaml")
        cfg = build_cfg(config, ["MODEL.DEVICE", "cpu"])
        overlay_figure(cfg, args.weights, args.overlays)
        print(f"wrote {args.overlays}")


if __name__ == "__main__":
    main()
