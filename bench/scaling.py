"""How AQFormer's cost grows with the input: time and peak memory per clip against resolution and T.

    .venv/bin/python -m bench.scaling [--config R50] [--sizes 224 320 448 512] [--frames-list 5 10 20] [--threads 2]

Two sweeps, each point in a FRESH subprocess (memory high-water marks must not mix), random weights, one
clip through the package's segmenter (``aqformer_d2.inference.build_segmenter``, eval mode,
``torch.inference_mode``):
- resolution: S x S frames for S in --sizes, T = --base-frames (5);
- clip length: T in --frames-list at --base-size (224).

Per point: median / min / max seconds of one clip over --repeats runs after --warmup runs, and peak
RSS (``ru_maxrss`` after the runs minus ``ru_maxrss`` after building the model: activations and allocator
overhead, not the weights). Each sweep's log-log least-squares slope is reported against the work measure
it should follow: pixels per clip T*S^2 for both sweeps (the pixel path is designed to be linear in
T*H*W; ABTI adds O(T^2 * HW), and TPAVI-style attention over all pixels would be (T*H*W)^2). A slope of 1
is linear. Local slopes between neighbouring points show where a curve bends.

Writes ``--out`` (default bench/results/scaling.json) and a PNG plot next to it. The JSON records the load
average before and after: run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import CONFIGS, MIB, RESULTS, ROOT, bench_cfg, machine, max_rss_bytes, random_clip, timed, \
    write_json


def worker(args) -> dict:
    """One measurement point (runs in its own process)."""
    import torch

    torch.set_num_threads(args.threads)
    from aqformer_d2.inference import build_segmenter

    cfg = bench_cfg(args.config, frames=args.frames, size=args.size)
    torch.manual_seed(0)
    segmenter = build_segmenter(cfg)  # random initialisation (MODEL.WEIGHTS empty)
    clip = random_clip(args.frames, args.size)  # uint8 [T, 3, S, S] frames, [T, 1, 96, 64] audio
    s = args.size
    base_peak = max_rss_bytes()
    stats = timed(lambda: segmenter(clip["images"], clip["audio"]), args.warmup, args.repeats)
    return {"size": s, "frames": args.frames, "pixels_per_clip": args.frames * s * s, "time_s": stats,
            "peak_activation_mib": (max_rss_bytes() - base_peak) / MIB, "threads": torch.get_num_threads()}


def run_point(args, size: int, frames: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "point.json"
        cmd = [sys.executable, "-m", "bench.scaling", "--worker", "--result-file", str(out),
               "--config", args.config, "--size", str(size), "--frames", str(frames), "--threads", str(args.threads),
               "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"scaling point size={size} T={frames} failed:\n{proc.stderr[-4000:]}")
        return json.loads(out.read_text())


def loglog_slope(xs, ys) -> float:
    """Least-squares slope of log(y) against log(x)."""
    import numpy as np

    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)[0])


def summarise(points) -> dict:
    """Fitted and local (neighbour-to-neighbour) slopes of time and memory against pixels per clip."""
    xs = [p["pixels_per_clip"] for p in points]
    out = {}
    for key, get in (("time", lambda p: p["time_s"]["median"]), ("memory", lambda p: p["peak_activation_mib"])):
        ys = [get(p) for p in points]
        out[key] = {"slope": loglog_slope(xs, ys),
                    "local_slopes": [loglog_slope(xs[i:i + 2], ys[i:i + 2]) for i in range(len(xs) - 1)]}
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "time", "seconds per clip (median)"), (axes[1], "memory", "peak activation MiB")):
        for sweep, marker in (("resolution", "o-"), ("frames", "s-")):
            pts = result["sweeps"][sweep]["points"]
            xs = [p["pixels_per_clip"] for p in pts]
            ys = [p["time_s"]["median"] if key == "time" else p["peak_activation_mib"] for p in pts]
            slope = result["sweeps"][sweep]["fit"][key]["slope"]
            ax.loglog(xs, ys, marker, label=f"{sweep} (slope {slope:.2f})")
            x0, y0 = xs[0], ys[0]
            ax.loglog([x0, xs[-1]], [y0, y0 * xs[-1] / x0], ":", color="grey")
        ax.set_xlabel("pixels per clip, T x S^2")
        ax.set_ylabel(label)
        ax.legend(title="dotted: linear")
    fig.suptitle(f"AQFormer-{result['config']} cost per clip ({result['threads']} threads)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="R50", help=f"one of {sorted(CONFIGS)} or a config file")
    p.add_argument("--sizes", nargs="+", type=int, default=[224, 320, 448, 512])
    p.add_argument("--frames-list", nargs="+", type=int, default=[5, 10, 20])
    p.add_argument("--base-size", type=int, default=224)
    p.add_argument("--base-frames", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(RESULTS / "scaling.json"))
    # worker mode (internal)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result-file", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--frames", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        Path(args.result_file).write_text(json.dumps(worker(args)))
        return 0
    result = {"config": args.config, "threads": args.threads, "warmup": args.warmup, "repeats": args.repeats,
              "command": " ".join([".venv/bin/python", "-m", "bench.scaling"] + list(argv if argv is not None else sys.argv[1:])),
              "machine": machine(), "loadavg_before": os.getloadavg()}
    sweeps = {"resolution": [(s, args.base_frames) for s in args.sizes],
              "frames": [(args.base_size, t) for t in args.frames_list]}
    result["sweeps"] = {}
    for name, plan in sweeps.items():
        points = [run_point(args, size, frames) for size, frames in plan]
        result["sweeps"][name] = {"points": points, "fit": summarise(points)}
    result["loadavg_after"] = os.getloadavg()
    out = write_json(args.out, result, indent=1)
    plot(result, out.with_suffix(".png"))
    lines = [f"| sweep | S | T | pixels/clip | s/clip (median) | peak activation MiB |", "|---|---:|---:|---:|---:|---:|"]
    for name, sweep in result["sweeps"].items():
        for p in sweep["points"]:
            lines.append(f"| {name} | {p['size']} | {p['frames']} | {p['pixels_per_clip']} | "
                         f"{p['time_s']['median']:.3f} | {p['peak_activation_mib']:.0f} |")
    for name, sweep in result["sweeps"].items():
        f = sweep["fit"]
        lines.append(f"{name}: time slope {f['time']['slope']:.2f} (local {[round(x, 2) for x in f['time']['local_slopes']]}), "
                     f"memory slope {f['memory']['slope']:.2f} (local {[round(x, 2) for x in f['memory']['local_slopes']]})")
    lines.append(f"load average before {result['loadavg_before']}, after {result['loadavg_after']}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
