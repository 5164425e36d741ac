"""Several models' listening evaluations side by side: one markdown table and a chart of the share of frames
with predicted foreground per condition (docs/listening.md).

    .venv/bin/python -m bench.listening_report NAME=DIR [NAME=DIR ...] [--chart PNG]

``DIR`` is the ``--output`` of ``bench.listening`` (its ``listening.json``). Table: per condition and model the
share of frames with any predicted foreground (the false-positive rate on negatives) with its 95 % bootstrap
range, the mean predicted area, M_J on the positive conditions and the listening score on the negatives.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Dict, List, Sequence

import numpy as np


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
    p.add_argument("models", nargs="+", metavar="NAME=DIR")
    p.add_argument("--chart", help="write the chart here (PNG)")
    args = p.parse_args(argv)
    records = load(args.models)
    lines = table(records)
    print("\n".join(lines))
    if args.chart:
        dataset = next(iter(records.values()))["dataset"]
        chart(records, args.chart, f"{dataset}: own and swapped audio (positives), negatives (ground truth empty)")
        print(f"wrote {args.chart}")
    return lines


if __name__ == "__main__":
    main()
