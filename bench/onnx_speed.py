"""ONNX Runtime against PyTorch eager, side by side: time per clip of the same model on the same clip.

    .venv/bin/python -m bench.onnx_speed                    # R50 at 224x224 and tiny at 128x128, T=5, 2 threads
    .venv/bin/python -m bench.onnx_speed --threads 2 1      # the same, then again with 1 thread each

For every config (random initialisation, ``torch.manual_seed(0)``) the script, in one process:

1. builds the PyTorch segmenter with :func:`aqformer_d2.inference.build_segmenter` (``TorchSegmenter``:
   ``torch.set_num_threads(threads)``, ``torch.inference_mode``) and exports its model with
   :func:`aqformer_d2.inference.export_clip_onnx` (the code path of ``tools/export_onnx.py``) to a
   temporary file, timing the export;
2. for each ``--threads`` value, builds the ONNX Runtime segmenter of that file with ``build_segmenter``
   (``OnnxRuntimeSegmenter``: ``intra_op_num_threads = threads``, ``inter_op_num_threads = 1``, default
   graph optimisations), timing the session creation;
3. runs ``--warmup`` untimed clips through each, then ``--repeats`` timed rounds; each round times one clip
   through each backend, the order alternating between rounds so that both see the same machine load,
   with ``--pause`` seconds of sleep before each timed clip (the other runtime's idle worker threads
   stop spinning);
4. records min / median / max per backend, the speed-up (median PyTorch / median ONNX Runtime, and the
   same for the minima), max |delta prob| between the two on the timed clip, and the load average
   (``os.getloadavg()``) before and after;
5. unless ``--no-profile``, profiles one more clip through each backend (first ``--threads`` value) after
   the timing: ONNX Runtime's own profiler (kernel time per ONNX op type, summed over nodes) and
   ``torch.profiler`` (self CPU time per aten op).

Writes bench/results/onnx_speed.json (git-ignored) and prints markdown tables. The goal it reports
against: ONNX Runtime at least 1.3x faster per clip than PyTorch eager (median).
"""
import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench.common import CONFIGS, RESULTS, ROOT, bench_cfg, config_file, default_size, machine, profile_markdown, random_clip, \
    summarize, torch_profile, write_json

GOAL_SPEEDUP = 1.3
DEFAULT_CONFIGS = ("R50", "tiny")


def _ort_profile_by_op(path: str, rows: int, runs: int):
    """Kernel time of ONNX Runtime's profile (JSON trace) per op type, divided by the ``runs`` it holds:
    ``{"total_self_s", "top": [{"op", "self_s", "share"}]}`` as :func:`bench.common.torch_profile` gives."""
    with open(path) as f:
        events = json.load(f)
    per_op = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] * 1e-6 / runs
    total = sum(per_op.values())
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:rows]
    return {"total_self_s": total, "top": [{"op": k, "self_s": v, "share": v / total} for k, v in top]}


def _time_backends(runners: dict, warmup: int, repeats: int, pause: float):
    """Warm up, then ``repeats`` rounds timing one clip per backend, alternating the order between rounds.
    ``pause`` seconds of sleep before every timed clip let the other runtime's worker threads stop spinning."""
    for _ in range(warmup):
        for run in runners.values():
            run()
    times = {k: [] for k in runners}
    outputs = {}
    for round_index in range(repeats):
        order = list(runners) if round_index % 2 == 0 else list(runners)[::-1]
        for key in order:
            time.sleep(pause)
            t0 = time.perf_counter()
            outputs[key] = runners[key]()
            times[key].append(time.perf_counter() - t0)
    return times, outputs


def bench_config(name: str, args, workdir: str) -> dict:
    import numpy as np
    import torch

    from aqformer_d2.inference import OnnxRuntimeSegmenter, build_segmenter, export_clip_onnx

    size = args.size or default_size(name, bench_cfg(name))
    cfg = bench_cfg(name, frames=args.frames, size=size)
    torch.manual_seed(0)
    torch_seg = build_segmenter(cfg)  # random initialisation (MODEL.WEIGHTS empty)
    path = os.path.join(workdir, f"{Path(config_file(name)).stem}_{size}.onnx")
    torch.set_num_threads(args.threads[0])
    start = time.perf_counter()
    export_clip_onnx(torch_seg.model, path, num_frames=args.frames, height=size, width=size,
                     input_format=cfg.INPUT.FORMAT)
    export_s = time.perf_counter() - start
    clip = random_clip(args.frames, size, seed=1)  # not the export's example clip (seed 0)
    frames, audio = clip["images"], clip["audio"]
    result = {
        "config_file": os.path.relpath(config_file(name), ROOT),
        "frames": args.frames,
        "size": size,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "pause_s": args.pause,
        "onnx_bytes": os.path.getsize(path),
        "export_s": export_s,
        "by_threads": {},
    }
    for threads in args.threads:
        load_before = os.getloadavg()
        torch.set_num_threads(threads)
        start = time.perf_counter()
        ort_seg = build_segmenter(cfg, "onnxruntime", path, num_threads=threads)
        session_s = time.perf_counter() - start
        runners = {"torch": lambda: torch_seg(frames, audio), "onnxruntime": lambda: ort_seg(frames, audio)}
        times, outputs = _time_backends(runners, args.warmup, args.repeats, args.pause)
        stats = {k: summarize(v) for k, v in times.items()}
        result["by_threads"][str(threads)] = {
            "threads": threads,
            "ort_session_create_s": session_s,
            "time_per_clip_s": stats,
            "speedup_median": stats["torch"]["median"] / stats["onnxruntime"]["median"],
            "speedup_min": stats["torch"]["min"] / stats["onnxruntime"]["min"],
            "max_abs_delta_prob": float(np.abs(outputs["torch"] - outputs["onnxruntime"]).max()),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        }
        del ort_seg
    if args.profile:
        threads = args.threads[0]
        torch.set_num_threads(threads)
        prof_seg = OnnxRuntimeSegmenter(path, num_threads=threads, enable_profiling=True,
                                        profile_prefix=os.path.join(workdir, f"ort_profile_{Path(path).stem}"))
        prof_seg(frames, audio)  # warm-up inside the profiled session
        prof_seg(frames, audio)
        result["profile_threads"] = threads
        # both runs are in the trace: per clip = half the totals
        result["ort_profile_per_clip"] = _ort_profile_by_op(prof_seg.end_profiling(), args.profile_rows, runs=2)
        result["torch_profile_per_clip"] = torch_profile(lambda: torch_seg(frames, audio), args.profile_rows)
    return result


def report(results: dict) -> str:
    lines = [
        "| config | size | threads | PyTorch eager s/clip (min / median / max) | ONNX Runtime s/clip (min / median / max) "
        "| speed-up (median) | speed-up (min) | max abs delta prob | load avg (1 min) before -> after |",
        "|---|---:|---:|---|---|---:|---:|---:|---|",
    ]
    for name, r in results.items():
        for t_key, rt in r["by_threads"].items():
            t, o = rt["time_per_clip_s"]["torch"], rt["time_per_clip_s"]["onnxruntime"]
            lines.append(
                f"| {name} | {r['size']} | {t_key} | {t['min']:.3f} / {t['median']:.3f} / {t['max']:.3f} "
                f"| {o['min']:.3f} / {o['median']:.3f} / {o['max']:.3f} | {rt['speedup_median']:.2f}x "
                f"| {rt['speedup_min']:.2f}x | {rt['max_abs_delta_prob']:.1e} "
                f"| {rt['loadavg_before'][0]:.2f} -> {rt['loadavg_after'][0]:.2f} |"
            )
    lines += ["", "| config | export s | ONNX Runtime session s | ONNX file MiB |", "|---|---:|---:|---:|"]
    for name, r in results.items():
        first = next(iter(r["by_threads"].values()))
        lines.append(f"| {name} | {r['export_s']:.1f} | {first['ort_session_create_s']:.1f} "
                     f"| {r['onnx_bytes'] / 2**20:.1f} |")
    for name, r in results.items():
        if "ort_profile_per_clip" not in r:
            continue
        for label, key in (("ONNX Runtime op type", "ort_profile_per_clip"),
                           ("PyTorch aten op (self CPU)", "torch_profile_per_clip")):
            prof = r[key]
            lines += ["", f"{name}: {label}, one clip, {r['profile_threads']} threads", ""] + profile_markdown(prof)
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS),
                        help=f"names ({', '.join(CONFIGS)}) or config files (default: {' '.join(DEFAULT_CONFIGS)})")
    parser.add_argument("--frames", type=int, default=5, help="T (default 5)")
    parser.add_argument("--size", type=int, default=None,
                        help="frame side for every config (default: 224 for R50, 128 for tiny, else INPUT.IMAGE_SIZE)")
    parser.add_argument("--threads", type=int, nargs="+", default=[2],
                        help="threads of both backends; several values are timed one after the other (default 2)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed clips per backend (default 2)")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--pause", type=float, default=0.2,
                        help="seconds of sleep before each timed clip (default 0.2)")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the two profiles")
    parser.add_argument("--profile-rows", type=int, default=12, help="ops listed per profile (default 12)")
    parser.add_argument("--out", default=str(RESULTS / "onnx_speed.json"))
    args = parser.parse_args(argv)

    import onnxruntime
    import torch

    load_start = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.configs:
            print(f"[onnx_speed] {name} ...", flush=True)
            results[name] = bench_config(name, args, workdir)
    text = report(results)
    print(text)
    payload = {
        "command": " ".join([".venv/bin/python", "-m", "bench.onnx_speed"] + list(argv if argv is not None else sys.argv[1:])),
        "machine": machine(),
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "goal_speedup": GOAL_SPEEDUP,
        "goal_met": {f"{name}@{t}": rt["speedup_median"] >= GOAL_SPEEDUP
                     for name, r in results.items() for t, rt in r["by_threads"].items()},
        "results": results,
        "markdown": text,
    }
    out = write_json(args.out, payload)
    print(f"\nwrote {out}")
    return payload


if __name__ == "__main__":
    main()
