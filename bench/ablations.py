"""The paper's Table 2 ablations (§4.4) in one command, resumable, with seeds, paper numbers and a chart.

    .venv/bin/python -m bench.ablations                         # the default table (SynthAVS, calibrated protocol)
    .venv/bin/python -m bench.ablations --tables a --seeds 0 1 2
    .venv/bin/python -m bench.ablations --tables e              # unprinted defaults (not in the default set)
    .venv/bin/python -m bench.ablations --rows a:vanilla b:both --tasks ms3
    .venv/bin/python -m bench.ablations --avs-root /data/AVSBench --iters 2000 --image-size 224 \\
        --config-file configs/avsbench/{task}/aqformer_R50.yaml --output docs/measurements/ablations_avsbench
    .venv/bin/python -m bench.ablations --report-only           # rebuild table / chart from finished runs

Every row is a name plus config overrides on top of the task's config file. Rows of different
sub-tables with identical overrides are one run (e.g. 2a "Audio Query" = 2b "neither"). Each finished
(run, seed) is written to OUTPUT/runs/{task}/*.json as soon as it ends, and runs already there (same
overrides, same protocol) are skipped, so an interrupted command resumes where it stopped. The full
model (seed 0) of each task is kept under WORK_DIR/models/ for bench/audio_attribution.py.

Outputs in --output: ablations.json (every row: seeds, means, paper numbers, comparison), ablations.md
(the table) and ablations.png (M_J, one bar per seed). See bench/README.md ("bench.ablations").
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bench.common import bench_cfg, child_env

logger = logging.getLogger("ablations")

# ----------------------------------------------------------------------------- keys
ABTI = "MODEL.AQ_PIXEL_DECODER.ABTI_POSITIONS"
SIM = "MODEL.AQFORMER.SIM_WEIGHT"
STAGES = "MODEL.AQ_TRANSFORMER_DECODER.DEC_STAGES"
QUERY = "MODEL.AQ_TRANSFORMER_DECODER.QUERY_TYPE"
SCOPE = "MODEL.AQ_TRANSFORMER_DECODER.CROSS_ATTN_SCOPE"
ALL_POSITIONS = [1, 2, 3, 4]

# Base settings implied by the paper's numbers:
# 2a = no ABTI, no AVSim (its "Audio Query" row equals 2b's first row); 2b = the four combinations;
# 2c = AVSim on (its "-" row equals 2b's AVSim-only row); 2d = the full model (its N = 3 row equals
# 2b's last row and Table 1's R50 MS3 result). Every row sets N explicitly (the paper's N = 3 unless
# the row varies it), because the tiny CPU config's own default is N = 2.
BASE_2A = {ABTI: [], SIM: 0.0, STAGES: 3}
FULL = {ABTI: ALL_POSITIONS, SIM: 1.0, STAGES: 3}
# Every printed form the tiny SynthAVS config can take (docs/paper_choices.md, "The paper as printed"; the
# tiny config already trains with one learning rate, and its audio encoder is random, so it stays trained).
AS_PRINTED = {
    "MODEL.AQ_PIXEL_DECODER.FW_NORM": False,
    "MODEL.AQ_PIXEL_DECODER.ABTI_LOGIT_SCALE": "none",
    "MODEL.AQ_TRANSFORMER_DECODER.MASK_EMBED": "plain",
    "MODEL.AQFORMER.SIM_DETACH_MASK": False,
    "SOLVER.WEIGHT_DECAY_NORM": 0.05,
    "SOLVER.WEIGHT_DECAY_EMBED": 0.05,
    "SOLVER.WARMUP_ITERS": 0,
    "SOLVER.CLIP_GRADIENTS.ENABLED": False,
    "INPUT.RANDOM_FLIP": "none",
}


@dataclass(frozen=True)
class Row:
    """One row of a sub-table.

    Attributes:
        table: sub-table id ("a".."e").
        name: short id, unique in its table (``--rows table:name``).
        label: text of the row in the markdown table (the paper's wording where it has one).
        overrides: config KEY -> value on top of the task's config file.
        paper: (M_F, M_J) printed in the paper's Table 2 (MS3, ResNet-50), or None.
        reference: the row every other row of the table is compared with (the paper's own setting).
    """

    table: str
    name: str
    label: str
    overrides: Tuple[Tuple[str, Any], ...]
    paper: Optional[Tuple[float, float]] = None
    reference: bool = False

    @property
    def key(self) -> str:
        return f"{self.table}:{self.name}"


def _row(table, name, label, overrides, paper=None, reference=False) -> Row:
    return Row(table, name, label, tuple(sorted(overrides.items())), paper, reference)


TABLE_TITLES = {
    "a": "(a) query type (no ABTI, no AVSim)",
    "b": "(b) components: ABTI x AVSim loss",
    "c": "(c) ABTI positions (AVSim on; 1 = stride 32 ... 4 = stride-4 mask feature)",
    "d": "(d) decoder stages N (full model)",
    "e": "(e) defaults the paper does not print (full model)",
}

TABLES: Dict[str, List[Row]] = {
    "a": [
        _row("a", "vanilla", "Vanilla Object Query", {**BASE_2A, QUERY: "vanilla"}, (0.534, 0.450)),
        _row("a", "own", "Audio Query† (own frame only)", {**BASE_2A, SCOPE: "own"}, (0.643, 0.526)),
        _row("a", "audio", "Audio Query (all frames)", dict(BASE_2A), (0.647, 0.535), reference=True),
    ],
    "b": [
        _row("b", "neither", "no ABTI, no AVSim", dict(BASE_2A), (0.647, 0.535), reference=True),
        _row("b", "abti", "ABTI only", {**BASE_2A, ABTI: ALL_POSITIONS}, (0.656, 0.543)),
        _row("b", "avsim", "AVSim loss only", {**BASE_2A, SIM: 1.0}, (0.650, 0.546)),
        _row("b", "both", "ABTI + AVSim (full model)", dict(FULL), (0.669, 0.557)),
    ],
    "c": [
        _row("c", "none", "-", {**FULL, ABTI: []}, (0.650, 0.546), reference=True),
        _row("c", "p1", "1", {**FULL, ABTI: [1]}),
        _row("c", "p12", "1,2", {**FULL, ABTI: [1, 2]}),
        _row("c", "p123", "1,2,3", {**FULL, ABTI: [1, 2, 3]}, (0.652, 0.549)),
        _row("c", "p4", "4", {**FULL, ABTI: [4]}, (0.652, 0.554)),
        _row("c", "p1234", "1,2,3,4", dict(FULL), (0.669, 0.557)),
    ],
    "d": [
        _row("d", "n1", "N = 1", {**FULL, STAGES: 1}, (0.599, 0.500)),
        _row("d", "n2", "N = 2", {**FULL, STAGES: 2}, (0.632, 0.520)),
        _row("d", "n3", "N = 3", dict(FULL), (0.669, 0.557), reference=True),
    ],
    # Not in the paper: the defaults docs/paper_choices.md accounts for ("Harness rows"; the row names
    # there are these names with the prefix "choice_"). The reference is the full model with the tiny
    # config's defaults; each row flips one of them, "as_printed" flips all printed forms at once.
    # Not here, because SynthAVS cannot measure them (random backbone and audio encoder): the backbone
    # multiplier and a frozen VGGish; run those on AVSBench (docs/paper_choices.md).
    "e": [
        _row("e", "default", "full model, config defaults", dict(FULL), reference=True),
        _row("e", "as_printed", "every printed form at once", {**FULL, **AS_PRINTED}),
        _row("e", "abti_logit_none", "eq. (9) without 1/sqrt(C_b)",
             {**FULL, "MODEL.AQ_PIXEL_DECODER.ABTI_LOGIT_SCALE": "none"}),
        _row("e", "mask_embed_plain", "eq. (6) plain (no MLP, no LN)",
             {**FULL, "MODEL.AQ_TRANSFORMER_DECODER.MASK_EMBED": "plain"}),
        _row("e", "sim_mean", "eq. (7) mean instead of sum", {**FULL, "MODEL.AQFORMER.SIM_REDUCTION": "mean"}),
        _row("e", "no_flip", "no random flip", {**FULL, "INPUT.RANDOM_FLIP": "none"}),
        _row("e", "wd_all", "weight decay on norms and embeddings",
             {**FULL, "SOLVER.WEIGHT_DECAY_NORM": 0.05, "SOLVER.WEIGHT_DECAY_EMBED": 0.05}),
        _row("e", "no_warmup", "no warm-up", {**FULL, "SOLVER.WARMUP_ITERS": 0}),
        _row("e", "poly_power_1", "poly power 1.0", {**FULL, "SOLVER.POLY_LR_POWER": 1.0}),
    ],
}

# Default selection: every paper sub-table on MS3 (where the paper ran them); on S4 only the full model,
# kept for the attribution study (the S4 query-type rows run with --tasks s4 --tables a; they are left out
# of the default for the 90-minute budget, and bench/synthavs_benchmark.py already compares them on S4).
DEFAULT_TABLES = {"ms3": ["a", "b", "c", "d"], "s4": []}
DEFAULT_EXTRA_ROWS = {"ms3": [], "s4": ["d:n3"]}
TASK_ORDER = ("ms3", "s4")
PAPER_TASK = "ms3"  # Table 2 of the paper was measured on MS3 (R50)  # MS3 first: the paper's ablation benchmark

# The default protocol, calibrated to fit 90 minutes on 2 CPU cores (run records:
# docs/measurements/ablations_calibration/): SynthAVS size and resolution, iterations.
DEFAULT_ITERS = 1000
DEFAULT_IMAGE_SIZE = 64
DEFAULT_SYNTHAVS_CLIPS = {"s4": (1000, 10, 150), "ms3": (1000, 10, 150)}
DEFAULT_SEEDS = (0, 1)


# ----------------------------------------------------------------------------- selection
def select_rows(tasks: Sequence[str], tables: Optional[Sequence[str]], row_keys: Optional[Sequence[str]]
                ) -> Dict[str, List[Row]]:
    """Rows to run per task. ``tables`` None: the default set (DEFAULT_TABLES + DEFAULT_EXTRA_ROWS);
    ``row_keys`` ("table:name") restricts to those rows (of any table, even outside ``tables``)."""
    known = {r.key: r for rows in TABLES.values() for r in rows}
    if row_keys:
        bad = [k for k in row_keys if k not in known]
        if bad:
            raise SystemExit(f"--rows: unknown row(s) {bad}; known: {sorted(known)}")
    if tables:
        bad = [t for t in tables if t not in TABLES]
        if bad:
            raise SystemExit(f"--tables: unknown sub-table(s) {bad}; known: {sorted(TABLES)}")
    out = {}
    for task in tasks:
        if row_keys:
            rows = [known[k] for k in row_keys]
        elif tables:
            rows = [r for t in tables for r in TABLES[t]]
        else:
            rows = [r for t in DEFAULT_TABLES.get(task, []) for r in TABLES[t]]
            rows += [known[k] for k in DEFAULT_EXTRA_ROWS.get(task, []) if known[k] not in rows]
        out[task] = rows
    return out


def canonical_overrides(overrides: Sequence[Tuple[str, Any]]) -> str:
    """A string that is equal for two rows exactly when their overrides are (order-insensitive)."""
    return json.dumps(sorted([k, v] for k, v in overrides), sort_keys=True)


def unique_runs(rows: Sequence[Row]) -> List[Tuple[str, List[Row]]]:
    """Group rows with identical overrides: [(canonical overrides, rows sharing them)], first-use order."""
    groups: Dict[str, List[Row]] = {}
    for r in rows:
        groups.setdefault(canonical_overrides(r.overrides), []).append(r)
    return list(groups.items())


def run_id(canonical: str, protocol: Dict[str, Any]) -> str:
    """Stable id of (overrides, protocol): a finished run is reused only when both match."""
    blob = json.dumps({"overrides": json.loads(canonical), "protocol": protocol}, sort_keys=True)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:10]


def run_slug(canonical: str) -> str:
    """Readable file-name part of a run: last key component = value, e.g. abti_positions=1-2-3-4."""
    parts = []
    for key, value in json.loads(canonical):
        v = "-".join(str(x) for x in value) if isinstance(value, list) else str(value)
        parts.append(f"{key.split('.')[-1].lower()}={v or 'none'}")
    return "_".join(parts)


def result_path(output: str, task: str, canonical: str, protocol: Dict[str, Any], seed: int) -> str:
    return os.path.join(output, "runs", task, f"{run_slug(canonical)}__{run_id(canonical, protocol)}_seed{seed}.json")


def pending_runs(plan: Dict[str, List[Row]], seeds: Sequence[int], output: str, protocols: Dict[str, Dict]
                 ) -> List[Tuple[str, str, List[Row], int]]:
    """(task, canonical overrides, rows, seed) still to run, most useful first: the full model (first seed)
    of every task (bench/audio_attribution.py needs it), then task by task (MS3 first) and sub-table by
    sub-table, every seed of a sub-table's runs before the next sub-table, so that whole sub-tables land."""
    full = canonical_overrides(dict(FULL).items())
    tasks = sorted(plan, key=lambda t: TASK_ORDER.index(t) if t in TASK_ORDER else len(TASK_ORDER))
    order = [(t, full, seeds[0]) for t in tasks if any(canonical_overrides(r.overrides) == full for r in plan[t])]
    for task in tasks:
        for table in dict.fromkeys(r.table for r in plan[task]):
            groups = [c for c, rows in unique_runs(plan[task]) if rows[0].table == table]
            for seed in seeds:
                order += [(task, c, seed) for c in groups]
    groups = {(t, c): rows for t in tasks for c, rows in unique_runs(plan[t])}
    todo, seen = [], set()
    for task, canonical, seed in order:
        if (task, canonical, seed) in seen:
            continue
        seen.add((task, canonical, seed))
        if not os.path.isfile(result_path(output, task, canonical, protocols[task], seed)):
            todo.append((task, canonical, groups[(task, canonical)], seed))
    return todo


# ----------------------------------------------------------------------------- comparison
def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def compare(row_values: Sequence[float], ref_values: Sequence[float], paper_row: Optional[float],
            paper_ref: Optional[float]) -> Dict[str, Any]:
    """Our difference (row mean - reference mean) against the paper's.

    ``same_sign``: None when the paper gives no number for the row (or no difference), else whether the
    two differences have the same sign (a zero difference of ours counts as not the same sign).
    ``beyond_spread``: whether the seed ranges of row and reference do not overlap (every seed of one
    above every seed of the other); None with fewer than 2 seeds on either side.
    """
    diff = _mean(row_values) - _mean(ref_values)
    paper_diff = None if paper_row is None or paper_ref is None else round(paper_row - paper_ref, 6)
    same_sign = None
    if paper_diff is not None and paper_diff != 0:
        same_sign = diff * paper_diff > 0
    beyond = None
    if len(row_values) >= 2 and len(ref_values) >= 2:
        beyond = min(row_values) > max(ref_values) or max(row_values) < min(ref_values)
    return {"diff": diff, "paper_diff": paper_diff, "same_sign": same_sign, "beyond_spread": beyond}


def build_table(plan: Dict[str, List[Row]], results: Dict[Tuple[str, str], Dict[int, Dict]]) -> List[Dict]:
    """One entry per (task, row) with its seeds' M_J / M_F, means, paper numbers and the comparison with
    its table's reference row. ``results``: (task, canonical overrides) -> seed -> run record."""
    entries = []
    for task, rows in plan.items():
        for r in rows:
            if task != PAPER_TASK:  # the paper's Table 2 is MS3 only: no paper numbers beside other tasks
                r = Row(r.table, r.name, r.label, r.overrides, None, r.reference)
            runs = results.get((task, canonical_overrides(r.overrides)), {})
            seeds = sorted(runs)
            e = {"task": task, "table": r.table, "row": r.name, "label": r.label, "overrides": dict(r.overrides),
                 "reference": r.reference, "paper_MF": r.paper[0] if r.paper else None,
                 "paper_MJ": r.paper[1] if r.paper else None, "seeds": seeds,
                 "MJ": [runs[s]["mIoU"] for s in seeds], "MF": [runs[s]["Fscore"] for s in seeds]}
            e["MJ_mean"] = _mean(e["MJ"]) if seeds else None
            e["MF_mean"] = _mean(e["MF"]) if seeds else None
            ref = next((x for x in TABLES[r.table] if x.reference), None)
            e["vs_reference"] = None
            if ref is not None and ref is not r and seeds:
                ref_runs = results.get((task, canonical_overrides(ref.overrides)), {})
                if ref_runs:
                    ref_paper = ref.paper if task == PAPER_TASK else None
                    e["vs_reference"] = {
                        "reference_row": ref.name,
                        "MJ": compare(e["MJ"], [v["mIoU"] for v in ref_runs.values()],
                                      e["paper_MJ"], ref_paper[1] if ref_paper else None),
                        "MF": compare(e["MF"], [v["Fscore"] for v in ref_runs.values()],
                                      e["paper_MF"], ref_paper[0] if ref_paper else None),
                    }
            entries.append(e)
    return entries


def _fmt(x: Optional[float], signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _yes_no(x: Optional[bool]) -> str:
    return "-" if x is None else ("yes" if x else "**no**")


def _spread(values: Sequence[float]) -> str:
    return "" if len(values) < 2 else f" ±{(max(values) - min(values)) / 2:.3f}"


def markdown_table(entries: Sequence[Dict]) -> str:
    """The table: paper numbers beside ours, Δ vs the sub-table's reference row, and the two verdicts."""
    lines = []
    for task in dict.fromkeys(e["task"] for e in entries):
        for table in dict.fromkeys(e["table"] for e in entries if e["task"] == task):
            lines += [f"**SynthAVS-{task.upper()} {TABLE_TITLES[table]}**" if task else TABLE_TITLES[table], "",
                      "| row | paper M_F | paper M_J | our M_F | our M_J (per seed) | Δ M_J ours / paper "
                      "| same sign as paper? | beyond seed spread? |",
                      "|---|---|---|---|---|---|---|---|"]
            for e in (x for x in entries if x["task"] == task and x["table"] == table):
                per_seed = ", ".join(f"{v:.3f}" for v in e["MJ"])
                ours_mj = "not run" if not e["seeds"] else f"{e['MJ_mean']:.3f}{_spread(e['MJ'])} ({per_seed})"
                ours_mf = "-" if not e["seeds"] else f"{e['MF_mean']:.3f}{_spread(e['MF'])}"
                vs = e["vs_reference"]
                if e["reference"]:
                    delta, sign, beyond = "reference", "", ""
                elif vs is None:
                    delta, sign, beyond = "-", "-", "-"
                else:
                    delta = f"{_fmt(vs['MJ']['diff'], True)} / {_fmt(vs['MJ']['paper_diff'], True)}"
                    sign, beyond = _yes_no(vs["MJ"]["same_sign"]), _yes_no(vs["MJ"]["beyond_spread"])
                label = e["label"] + (" (ref.)" if e["reference"] else "")
                lines.append(f"| {label} | {_fmt(e['paper_MF'])} | {_fmt(e['paper_MJ'])} | {ours_mf} | {ours_mj} "
                             f"| {delta} | {sign} | {beyond} |")
            lines.append("")
    return "\n".join(lines)


def save_chart(entries: Sequence[Dict], path: str) -> None:
    """Bar chart of M_J: one panel per (task, sub-table), one bar per seed, the paper's M_J as a tick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((e["task"], e["table"]) for e in entries))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1, 4.2), squeeze=False)
    for ax, (task, table) in zip(axes[0], panels):
        rows = [e for e in entries if e["task"] == task and e["table"] == table]
        max_seeds = max([len(e["seeds"]) for e in rows] + [1])
        width = 0.8 / max_seeds
        for i, e in enumerate(rows):
            for j, v in enumerate(e["MJ"]):
                ax.bar(i - 0.4 + width * (j + 0.5), v, width, color=f"C{j}", label=f"seed {e['seeds'][j]}" if i == 0 else None)
            if e["paper_MJ"] is not None:
                ax.plot([i - 0.4, i + 0.4], [e["paper_MJ"]] * 2, color="k", lw=2, label="paper" if i == 0 else None)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([e["row"] for e in rows], rotation=45, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(f"{task.upper()} {table}", fontsize=9)
        ax.set_ylabel("M_J")
    handles, labels = [], []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="upper right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- running
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", choices=("s4", "ms3"), default=None,
                   help="default: the tasks of the default set (ms3, s4); with --tables/--rows: ms3")
    p.add_argument("--tables", nargs="+", default=None, help=f"sub-tables {sorted(TABLES)} (default: {DEFAULT_TABLES})")
    p.add_argument("--rows", nargs="+", default=None, help="rows as table:name, e.g. a:vanilla d:n3")
    p.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS))
    p.add_argument("--iters", type=int, default=DEFAULT_ITERS, help="training iterations per run")
    p.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help="model input size (INPUT.IMAGE_SIZE)")
    p.add_argument("--avs-root", default=None,
                   help="an AVSBench-layout tree (Single-source/ and/or Multi-sources/) instead of SynthAVS")
    p.add_argument("--synthavs-clips", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"), default=None,
                   help="clips per split of the generated SynthAVS (default: the calibrated protocol, bench/README.md)")
    p.add_argument("--config-file", default=os.path.join("configs", "synthavs", "aqformer_tiny_{task}.yaml"),
                   help="config per task; '{task}' is replaced by s4 / ms3")
    p.add_argument("--output", default=os.path.join("docs", "measurements", "ablations"),
                   help="results (committed): runs/, ablations.json/.md/.png")
    p.add_argument("--work-dir", default=os.path.join("output", "ablations"),
                   help="training folders and the saved full models (large, git-ignored)")
    p.add_argument("--jobs", type=int, default=2,
                   help="runs trained at once, each in its own process (default 2: one per core of a 2-core machine)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--report-name", default="ablations",
                   help="file name (no extension) of the report in --output: NAME.json, NAME.md, NAME.png; give "
                        "another name for a selection that should not replace the default table's report "
                        "(e.g. --tables e --report-name ablations_e)")
    p.add_argument("--no-report", action="store_true", help=argparse.SUPPRESS)  # used by the --jobs children
    p.add_argument("--rerun", action="store_true", help="run the selected (row, seed) again even if finished")
    p.add_argument("--report-only", action="store_true", help="only rebuild the table and chart from finished runs")
    p.add_argument("--dry-run", action="store_true", help="list the runs that would be made, then stop")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="extra config overrides KEY VALUE for every run")
    args = p.parse_args(argv)
    if args.tasks is None:
        args.tasks = ["ms3"] if (args.tables or args.rows) else list(TASK_ORDER)
    if args.iters < 1 or args.image_size < 32 or args.jobs < 1 or args.threads < 1:
        p.error("--iters, --jobs and --threads must be >= 1 and --image-size >= 32")
    return args


def synthavs_params(task: str, args) -> Dict[str, Any]:
    n = tuple(args.synthavs_clips) if args.synthavs_clips else DEFAULT_SYNTHAVS_CLIPS[task]
    # Frames are generated at the model's input size (no resize cost, same pixels as a larger set resized).
    return dict(variant=task, seed=0, n_train=n[0], n_val=n[1], n_test=n[2], image_size=max(args.image_size, 32),
                num_categories=8, snr_db=10.0)


def protocol_for(task: str, args) -> Dict[str, Any]:
    """Everything besides the row's overrides and the seed that determines a run's result."""
    data = {"avs_root": args.avs_root} if args.avs_root else {"synthavs": synthavs_params(task, args)}
    return {"config_file": args.config_file.format(task=task), "iters": args.iters, "image_size": args.image_size,
            "data": data, "opts": list(args.opts)}


def _dataset_opts(task: str, args) -> List[str]:
    if args.avs_root:
        return ["DATASETS.AVS_ROOT", args.avs_root, "DATASETS.TRAIN", f"('avsbench_{task}_train',)",
                "DATASETS.TEST", f"('avsbench_{task}_test',)"]
    root = os.path.join(args.work_dir, "data", f"SynthAVS_{task}")
    return ["DATASETS.SYNTHAVS_ROOT", root, "DATASETS.TRAIN", f"('synthavs_{task}_train',)",
            "DATASETS.TEST", f"('synthavs_{task}_test',)"]


def prepare_data(tasks: Sequence[str], args) -> None:
    if args.avs_root:
        for task in tasks:
            sub = "Single-source" if task == "s4" else "Multi-sources"
            if not os.path.isdir(os.path.join(args.avs_root, sub)):
                raise SystemExit(f"--avs-root {args.avs_root}: no {sub}/ folder for task {task} (AVSBench layout)")
        return
    from aqformer_d2.data.synthavs import generate_synthavs

    for task in tasks:
        root = os.path.join(args.work_dir, "data", f"SynthAVS_{task}")
        t0 = time.perf_counter()
        manifest = generate_synthavs(root, **synthavs_params(task, args))
        logger.info("SynthAVS-%s at %s: %s in %.0f s", task.upper(), root,
                    "already there" if manifest.get("skipped") else "generated", time.perf_counter() - t0)


def model_paths(work_dir: str, task: str) -> Tuple[str, str]:
    """Saved full model of a task (seed 0): (state dict .pth, config .yaml)."""
    base = os.path.join(work_dir, "models", f"{task}_full_seed0")
    return base + ".pth", base + ".yaml"


def run_one(task: str, canonical: str, rows: Sequence[Row], seed: int, args, protocol: Dict[str, Any]) -> Dict:
    """Train and evaluate one (overrides, seed); returns the record written to the run's JSON."""
    import torch
    from detectron2.utils.env import seed_all_rng

    from aqformer_d2.engine import train_and_evaluate

    overrides = json.loads(canonical)
    out_dir = os.path.join(args.work_dir, "train", task, f"{run_slug(canonical)}__{run_id(canonical, protocol)}_seed{seed}")
    # Data loading in the main process: a forked loader worker of a process whose torch already ran with
    # 2 threads hung here (no batch after minutes), and at these sizes a worker buys nothing.
    opts = ["OUTPUT_DIR", out_dir, "SEED", seed, "SOLVER.MAX_ITER", args.iters, "INPUT.IMAGE_SIZE", args.image_size,
            "SOLVER.CHECKPOINT_PERIOD", 10 ** 9, "TEST.EVAL_PERIOD", 0, "DATALOADER.NUM_WORKERS", 0]
    opts += _dataset_opts(task, args)
    for key, value in overrides:
        opts += [key, value]
    opts += list(args.opts)
    cfg = bench_cfg(protocol["config_file"], opts, device=None)
    seed_all_rng(seed)
    load_before = os.getloadavg()
    model, results, seconds = train_and_evaluate(cfg)
    record = {
        "task": task, "seed": seed, "overrides": dict(overrides), "rows": [r.key for r in rows],
        "protocol": protocol, "run_id": run_id(canonical, protocol),
        "mIoU": results["avs"]["mIoU"], "Fscore": results["avs"]["Fscore"],
        "train_minutes": round(seconds / 60, 2), "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()], "torch_threads": torch.get_num_threads(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if seed == 0 and canonical == canonical_overrides(dict(FULL).items()):
        pth, yaml_path = model_paths(args.work_dir, task)
        os.makedirs(os.path.dirname(pth), exist_ok=True)
        torch.save(model.state_dict(), pth)
        with open(yaml_path, "w") as f:
            f.write(cfg.dump())
        record["saved_model"] = pth
    # The loss curves (detectron2's metrics.json) are kept beside the result, where they are committed.
    curve = result_path(args.output, task, canonical, protocol, seed)[: -len(".json")] + ".metrics.jsonl"
    os.makedirs(os.path.dirname(curve), exist_ok=True)
    shutil.copyfile(os.path.join(out_dir, "metrics.json"), curve)
    for leftover in glob.glob(os.path.join(out_dir, "*.pth")):
        os.remove(leftover)  # the large checkpoint; metrics.json and the log stay
    return record


def _write_json(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def load_results(plan: Dict[str, List[Row]], seeds: Sequence[int], output: str, protocols: Dict[str, Dict]
                 ) -> Dict[Tuple[str, str], Dict[int, Dict]]:
    """Finished runs of the plan (any of ``seeds``) read from OUTPUT/runs."""
    results: Dict[Tuple[str, str], Dict[int, Dict]] = {}
    for task, rows in plan.items():
        for canonical, _ in unique_runs(rows):
            for seed in seeds:
                path = result_path(output, task, canonical, protocols[task], seed)
                if os.path.isfile(path):
                    with open(path) as f:
                        try:
                            record = json.load(f)
                        except json.JSONDecodeError as e:
                            raise SystemExit(f"{path}: not valid JSON ({e}); delete it to re-run that run") from e
                    results.setdefault((task, canonical), {})[seed] = record
    return results


def write_report(plan, seeds, args, protocols) -> List[Dict]:
    results = load_results(plan, seeds, args.output, protocols)
    entries = build_table(plan, results)
    cmd = ".venv/bin/python -m bench.ablations " + " ".join(sys.argv[1:])
    report = {"command": cmd, "seeds": list(seeds), "protocols": protocols, "rows": entries}
    _write_json(os.path.join(args.output, args.report_name + ".json"), report)
    header = (f"Finished runs of `OUTPUT/runs/` (protocol: {args.iters} iterations, input {args.image_size} px; "
              f"seeds {list(seeds)}; this file written by `{cmd}`, which also trains what is missing unless "
              "--report-only). Δ is row mean minus the sub-table's reference row mean; "
              "'beyond seed spread' = the seeds' ranges do not overlap.\n\n")
    with open(os.path.join(args.output, args.report_name + ".md"), "w") as f:
        f.write(header + markdown_table(entries))
    if any(e["seeds"] for e in entries):
        save_chart([e for e in entries if e["seeds"]], os.path.join(args.output, args.report_name + ".png"))
    return entries


def run_here(todo, args, plan, protocols) -> None:
    """Train the pending runs one after the other in this process."""
    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    for i, (task, canonical, rows, seed) in enumerate(todo, 1):
        logger.info("[%d/%d] %s seed %d: %s", i, len(todo), task, seed, ", ".join(r.key for r in rows))
        record = run_one(task, canonical, rows, seed, args, protocols[task])
        _write_json(result_path(args.output, task, canonical, protocols[task], seed), record)
        logger.info("[%d/%d] M_J %.4f M_F %.4f in %.1f min (elapsed %.1f min)", i, len(todo), record["mIoU"],
                    record["Fscore"], record["train_minutes"], (time.perf_counter() - start) / 60)
        if not args.no_report:
            write_report(plan, args.seeds, args, protocols)


def child_argv(args, task: str, row_key: str, seed: int) -> List[str]:
    """Arguments of a child that trains exactly one run with this command's protocol."""
    out = ["--tasks", task, "--rows", row_key, "--seeds", str(seed), "--jobs", "1", "--no-report",
           "--iters", str(args.iters), "--image-size", str(args.image_size), "--config-file", args.config_file,
           "--output", args.output, "--work-dir", args.work_dir, "--threads", str(args.threads)]
    if args.avs_root:
        out += ["--avs-root", args.avs_root]
    if args.synthavs_clips:
        out += ["--synthavs-clips"] + [str(n) for n in args.synthavs_clips]
    return out + [str(o) for o in args.opts]


def run_in_children(todo, args, plan, protocols) -> None:
    """Train the pending runs ``args.jobs`` at a time, each in a child process (``--jobs 1`` of this
    script for that one run); the table is rebuilt whenever one ends. A failed child stops the command."""
    import subprocess

    env = child_env(dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
    queue, running, start = list(todo), [], time.perf_counter()
    log_dir = os.path.join(args.work_dir, "logs")
    os.makedirs(log_dir, exist_ok=True)
    while queue or running:
        while queue and len(running) < args.jobs:
            task, canonical, rows, seed = queue.pop(0)
            cmd = [sys.executable, "-m", "bench.ablations"] + child_argv(args, task, rows[0].key, seed)
            log = os.path.join(log_dir, f"{task}_{run_slug(canonical)}_seed{seed}.log")
            logger.info("start %s seed %d (%s); log %s", task, seed, ", ".join(r.key for r in rows), log)
            fh = open(log, "w")
            running.append((subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env), fh, task, rows, seed, log))
        time.sleep(5)
        for item in list(running):
            proc, fh, task, rows, seed, log = item
            if proc.poll() is None:
                continue
            running.remove(item)
            fh.close()
            if proc.returncode != 0:
                for other in running:
                    other[0].terminate()
                raise SystemExit(f"run {task} seed {seed} ({rows[0].key}) failed (exit {proc.returncode}); see {log}")
            logger.info("done %s seed %d (%s); elapsed %.1f min", task, seed, rows[0].key,
                        (time.perf_counter() - start) / 60)
            write_report(plan, args.seeds, args, protocols)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    plan = select_rows(args.tasks, args.tables, args.rows)
    protocols = {task: protocol_for(task, args) for task in plan}
    for task, p in protocols.items():
        if not os.path.isfile(p["config_file"]):
            raise SystemExit(f"--config-file: {p['config_file']} (task {task}) does not exist")
    if args.rerun:
        for task, rows in plan.items():
            for canonical, _ in unique_runs(rows):
                for seed in args.seeds:
                    path = result_path(args.output, task, canonical, protocols[task], seed)
                    if os.path.isfile(path):
                        os.remove(path)
    todo = pending_runs(plan, args.seeds, args.output, protocols)
    total = sum(len(unique_runs(rows)) for rows in plan.values()) * len(args.seeds)
    logger.info("%d runs in the plan, %d finished, %d to do", total, total - len(todo), len(todo))
    if args.dry_run:
        for task, canonical, rows, seed in todo:
            print(f"{task} seed {seed}: {', '.join(r.key for r in rows)}  {run_slug(canonical)}")
        return []
    if not args.report_only and todo:
        prepare_data([t for t in plan if any(x[0] == t for x in todo)], args)
        if args.jobs > 1 and len(todo) > 1:
            run_in_children(todo, args, plan, protocols)
        else:
            run_here(todo, args, plan, protocols)
    if args.no_report:
        return []
    entries = write_report(plan, args.seeds, args, protocols)
    print(markdown_table(entries))
    return entries


if __name__ == "__main__":
    main()
