"""Several models' listening evaluations side by side: one markdown table and a chart of the share of frames
with predicted foreground per condition (docs/listening.md).

    .venv/bin/python -m bench.listening_report NAME=DIR [NAME=DIR ...] [--chart PNG] [--min-areas A [A ...]]
        [--area-conditions COND [COND ...]]

``DIR`` is the ``--output`` of ``bench.listening`` (its ``listening.json``). Table: per condition and model the
share of frames with any predicted foreground (the false-positive rate on negatives) with its 95 % bootstrap
range, the mean predicted area, M_J on the positive conditions and the listening score on the negatives.

``--min-areas`` adds a table of how large the false positives are: per negative condition and model, the
share of frames whose predicted foreground covers more than each area ``A`` (a share of the frame; 0 = any
pixel = the FPR), read from the per-clip records ``DIR/{condition}.json`` that ``bench.listening`` writes;
``--area-conditions`` limits it to some negative conditions (default: all; ``own_empty_gt`` reads the
frames of ``own.json`` whose ground truth is empty).

``--seeds`` reads ``NAME=DIR[,DIR ...]``, one folder per training seed, and prints one line per model instead:
M_J on the positive conditions and the false-positive rate on the negatives, each seed's value in seed order
("0.873 / 0.841"), so that a difference between models can be checked against the seed spread; its chart
has one bar per model and condition at the mean over seeds, with the seeds' minimum and maximum as whiskers.
``--conditions`` limits its columns.

    .venv/bin/python -m bench.listening_report --seeds full=DIR_S0,DIR_S1 vanilla=DIR_S0,DIR_S1 \
        [--conditions own silence offscreen_scene] [--chart PNG]
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from aqformer_d2.evaluation.listening import foreground_frames_above


def load(specs: Sequence[str]) -> Dict[str, Dict]:
    """``["name=dir", ...]`` -> ``{name: listening.json}``; every model must have the same conditions."""
    out: Dict[str, Dict] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name:
            raise SystemExit(f"{spec!r}: expected NAME=DIR (DIR: the --output of bench.listening)")
        path = os.path.join(folder, "listening.json")
        if not os.path.isfile(path):
            raise SystemExit(f"{spec!r}: {path} does not exist")
        with open(path) as f:
            out[name] = json.load(f)
    conditions = {name: list(rec["summary"]) for name, rec in out.items()}
    first = next(iter(conditions.values()))
    for name, conds in conditions.items():
        if conds != first:
            raise SystemExit(f"{name}: conditions {conds} differ from {first}; evaluate every model alike")
    return out


def load_seeds(specs: Sequence[str]) -> Dict[str, List[Dict]]:
    """``["name=dir0,dir1", ...]`` -> ``{name: [listening.json of each seed folder]}``.

    Every model must have the same conditions (as :func:`load`) and the same number of seed folders, and the
    seeds of one model the same minimum-area rule (``min_area`` of bench.listening, 0 when absent)."""
    flat, counts = [], {}
    for spec in specs:
        name, sep, folders = spec.partition("=")
        if not sep or not name:
            raise SystemExit(f"{spec!r}: expected NAME=DIR[,DIR ...] (one bench.listening --output per seed)")
        if name in counts:
            raise SystemExit(f"{name}: named twice")
        parts = folders.split(",")
        counts[name] = len(parts)
        flat += [f"{name}={folder}" if len(parts) == 1 else f"{name}#{i}={folder}" for i, folder in enumerate(parts)]
    if len(set(counts.values())) > 1:
        raise SystemExit(f"every model needs the same number of seed folders, got {counts}")
    records = load(flat)
    values = iter(records.values())
    groups = {name: [next(values) for _ in range(n)] for name, n in counts.items()}
    for name, seeds in groups.items():
        rules = [rec.get("min_area", 0.0) for rec in seeds]
        if len(set(rules)) > 1:
            raise SystemExit(f"{name}: its seed folders were evaluated with different --min-area ({rules})")
    return groups


def seed_table(groups: Dict[str, List[Dict]], conditions: Optional[Sequence[str]] = None) -> List[str]:
    """Markdown: one line per model, one column per condition (``conditions``, default all): M_J on positive
    conditions, the share of frames with predicted foreground (FPR) on negatives, each seed's value in order."""
    summary = next(iter(groups.values()))[0]["summary"]
    if conditions is None:
        conditions = list(summary)
    unknown = [c for c in conditions if c not in summary]
    if unknown:
        raise SystemExit(f"--conditions {unknown}: not conditions of the records ({list(summary)})")
    head = [f"{c} ({'FPR' if summary[c]['negative'] else 'M_J'})" for c in conditions]
    lines = ["| model | " + " | ".join(head) + " |", "|---|" + "---:|" * len(conditions)]
    for name, seeds in groups.items():
        cells = []
        for cond in conditions:
            key = "foreground_frames" if summary[cond]["negative"] else "mIoU"
            cells.append(" / ".join(f"{rec['summary'][cond][key]:.3f}" for rec in seeds))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def seed_chart(groups: Dict[str, List[Dict]], conditions: Sequence[str], path: str, title: str) -> None:
    """Grouped bars: per condition and model the share of frames with predicted foreground, mean over seeds,
    whiskers from the seeds' minimum to their maximum."""
    from bench.common import BarSeries, grouped_bar_chart

    series = []
    for name, seeds in groups.items():
        per_seed = np.array([[rec["summary"][c]["foreground_frames"] for c in conditions] for rec in seeds])
        mean = per_seed.mean(0)  # [conditions]
        series.append(BarSeries(name, mean, np.stack([mean - per_seed.min(0), per_seed.max(0) - mean])))
    grouped_bar_chart(path, [c.replace("_", "\n", 1) for c in conditions], series,
                      ylabel="frames with predicted foreground", title=title, ylim=1.05, group_width=1.1,
                      legend_outside=True)


def table(records: Dict[str, Dict]) -> List[str]:
    """Markdown: one line per condition, per model "FPR [lo, hi]; area; M_J or score"."""
    names = list(records)
    head = "| condition | " + " | ".join(names) + " |"
    lines = [head, "|---|" + "---|" * len(names)]
    conditions = list(next(iter(records.values()))["summary"])
    for cond in conditions:
        cells = []
        for name in names:
            row = records[name]["summary"][cond]
            lo, hi = row["foreground_frames_ci"]
            cell = f"{row['foreground_frames']:.3f} [{lo:.3f}, {hi:.3f}]; area {row['mean_area']:.3f}"
            if "mIoU" in row:
                cell += f"; M_J {row['mIoU']:.3f}"
            if "listening_score" in row:
                cell += f"; S {row['listening_score']:.3f}"
            cells.append(cell)
        lines.append(f"| {cond} | " + " | ".join(cells) + " |")
    return lines


def area_table(records: Dict[str, Dict], folders: Dict[str, str], min_areas: Sequence[float],
               conditions: Optional[Sequence[str]] = None) -> List[str]:
    """Markdown: one line per negative condition (``conditions``, default all), per model the shares of frames
    with predicted foreground above each of ``min_areas``, from ``folder/{condition}.json``'s per-clip
    ``"area"`` lists."""
    names = list(records)
    summary = next(iter(records.values()))["summary"]
    negatives = [c for c, row in summary.items() if row["negative"]]
    if conditions is not None:
        unknown = [c for c in conditions if c not in negatives]
        if unknown:
            raise SystemExit(f"--area-conditions {unknown}: not negative conditions of the records ({negatives})")
        negatives = list(conditions)
    head = "frames with foreground above area " + " / ".join(f"{a:g}" for a in min_areas)
    lines = [f"| condition: {head} | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for cond in negatives:
        cells = []
        source = summary[cond].get("derived_from")  # own_empty_gt: the own condition's empty frames
        for name in names:
            path = os.path.join(folders[name], f"{source or cond}.json")
            if not os.path.isfile(path):
                raise SystemExit(f"{name}: {path} does not exist (the per-clip record of bench.listening's --output)")
            with open(path) as f:
                clips = json.load(f)["clips"]
            if source is None:
                area = [a for clip in clips for a in clip["area"]]
            else:
                area = [a for clip in clips for a, empty in zip(clip["area"], clip["empty_gt"]) if empty]
            cells.append(" / ".join(f"{foreground_frames_above(area, a):.3f}" for a in min_areas))
        lines.append(f"| {cond} | " + " | ".join(cells) + " |")
    return lines


def chart(records: Dict[str, Dict], path: str, title: str) -> None:
    """Grouped bars: share of frames with predicted foreground per condition and model, with bootstrap ranges."""
    from bench.common import BarSeries, grouped_bar_chart

    conditions = list(next(iter(records.values()))["summary"])
    series = []
    for name, record in records.items():
        rows = [record["summary"][c] for c in conditions]
        val = np.array([r["foreground_frames"] for r in rows])
        lo = np.array([r["foreground_frames_ci"][0] for r in rows])
        hi = np.array([r["foreground_frames_ci"][1] for r in rows])
        series.append(BarSeries(name, val, np.stack([val - lo, hi - val])))
    grouped_bar_chart(path, [c.replace("_", "\n", 1) for c in conditions], series,
                      ylabel="frames with predicted foreground", title=title, ylim=1.05, legend_loc="center right",
                      group_width=1.1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", metavar="NAME=DIR", help="NAME=DIR[,DIR ...] with --seeds")
    p.add_argument("--seeds", action="store_true",
                   help="one folder per seed for each model; one line per model with every seed's value")
    p.add_argument("--conditions", nargs="+", metavar="COND", help="columns of the --seeds table (default: all)")
    p.add_argument("--chart", help="write the chart here (PNG)")
    p.add_argument("--min-areas", type=float, nargs="+", metavar="A",
                   help="also tabulate the share of negative frames with predicted foreground above these areas "
                        "(shares of the frame, e.g. 0 0.002 0.005 0.01)")
    p.add_argument("--area-conditions", nargs="+", metavar="COND",
                   help="negative conditions of the --min-areas table (default: all negative conditions)")
    args = p.parse_args(argv)
    if args.min_areas and not all(0.0 <= a < 1.0 for a in args.min_areas):
        p.error(f"--min-areas must be shares of the frame in [0, 1), got {args.min_areas}")
    if args.seeds:
        if args.min_areas or args.area_conditions:
            p.error("--min-areas and --area-conditions tabulate single records: run them without --seeds")
        groups = load_seeds(args.models)
        lines = seed_table(groups, args.conditions)
        print("\n".join(lines))
        if args.chart:
            first = next(iter(groups.values()))[0]
            conditions = args.conditions or list(first["summary"])
            seed_chart(groups, conditions, args.chart,
                       f"{first['dataset']}: mean over seeds, whiskers from the lowest to the highest seed")
            print(f"wrote {args.chart}")
        return lines
    if args.conditions:
        p.error("--conditions selects the columns of the --seeds table")
    records = load(args.models)
    lines = table(records)
    if args.min_areas:
        folders = {name: spec.partition("=")[2] for name, spec in zip(records, args.models)}
        lines += [""] + area_table(records, folders, args.min_areas, args.area_conditions)
    print("\n".join(lines))
    if args.chart:
        dataset = next(iter(records.values()))["dataset"]
        chart(records, args.chart, f"{dataset}: own and swapped audio (positives), negatives (ground truth empty)")
        print(f"wrote {args.chart}")
    return lines


if __name__ == "__main__":
    main()
