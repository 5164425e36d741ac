"""Speed, memory and FLOPs of the full-size AQFormer models on the CPU (eval mode, torch.inference_mode).

    .venv/bin/python -m bench.model_speed                # R50 and PVT-v2-b5, T=5, 224x224, 2 threads

For every config (default: the S4 configs with ResNet-50 and PVT-v2-b5; random initialisation) it
measures, each measurement in a FRESH subprocess so that memory high-water marks do not mix (started with
the glibc malloc settings of ``bench/malloc_env.py`` unless ``--malloc default``: with glibc's defaults
the backbone-alone time moved by up to 30% between processes):

1. backbone alone: time per clip (T frames in one batch; min/median/max of ``--repeats`` runs after
   ``--warmup`` runs) and peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after the runs minus
   the same value right after the imports, so weights + activations + allocator overhead);
2. whole model: the same for one clip through the package's segmenter (``aqformer_d2.inference.build_segmenter``,
   the PyTorch backend the demo runs: ``torch.inference_mode``, probabilities at the input size); then, in
   the same process after the peak was read, the time of each part (backbone, audio encoder, pixel decoder with ABTI, transformer decoder) called
   alone on its real inputs (captured with forward pre-hooks during one clip), the FLOPs of each
   part (fvcore ``FlopCountAnalysis``; fvcore counts one multiply-add as one flop, so "GFLOP" below
   means 10^9 multiply-adds), the achieved GFLOP/s of each part, a per-submodule time breakdown of the
   pixel and transformer decoders, and a torch.profiler table (by op) of the whole model and of the
   pixel decoder.

fvcore ignores element-wise ops (add, mul, softmax, ...) by design and has no handle for
``aten::scaled_dot_product_attention`` and ``aten::_native_multi_head_attention`` (what
nn.MultiheadAttention runs): this script adds handles for those two (projections + QK^T + AV, see
``sdpa_flop_jit`` / ``native_mha_flop_jit``). ``grid_sample`` (deformable attention) is counted by
fvcore as 4 multiply-adds per output element. The unsupported ops left are listed in the JSON.

Prints markdown tables and writes bench/results/model_speed.json (git-ignored). The goals checked:
whole R50 model time <= 3x the R50 backbone alone; pixel decoder achieved GFLOP/s >= 85% of the
backbone's; peak RSS of the R50 model < 2 GiB.
"""
import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import CONFIGS, GIB, MIB, RESULTS, ROOT, bench_cfg, capture_inputs, current_rss_bytes, \
    fmt_times, machine, max_rss_bytes, plain_copy, profile_markdown, random_clip, timed, torch_profile, write_json
from bench.malloc_env import with_malloc_env, without_malloc_env

PARTS = (
    ("backbone", "backbone"),
    ("audio encoder", "audio_encoder"),
    ("pixel decoder (ABTI)", "pixel_decoder"),
    ("transformer decoder", "predictor"),
)


# ------------------------------------------------------------------------------------------------ fvcore handles
def sdpa_flop_jit(inputs, outputs):
    """aten::scaled_dot_product_attention(q [..., L, E], k [..., S, E], v [..., S, Ev]): QK^T + AV."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = 1
    for d in q[:-2]:
        batch *= d
    length, e = q[-2], q[-1]
    s, ev = k[-2], v[-1]
    return batch * length * s * (e + ev)


def native_mha_flop_jit(inputs, outputs):
    """aten::_native_multi_head_attention(query [B, L, E], key [B, S, E], value, embed_dim, heads, ...):
    q/k/v input projections, QK^T, AV and the output projection."""
    from fvcore.nn.jit_handles import get_shape

    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    batch, length, e = q
    s = k[1]
    projections = batch * length * e * e + 2 * batch * s * e * e + batch * length * e * e
    return projections + 2 * batch * length * s * e


def count_flops(module, args):
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(module, args)
    analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
    analysis.set_op_handle("aten::_native_multi_head_attention", native_mha_flop_jit)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    total = analysis.total()
    return {
        "gflops": total / 1e9,
        "by_operator_gflops": {k: v / 1e9 for k, v in sorted(analysis.by_operator().items(), key=lambda kv: -kv[1])},
        "by_module_gflops": {k: v / 1e9 for k, v in analysis.by_module().items() if k and k.count(".") == 0},
        "unsupported_ops": dict(analysis.unsupported_ops()),
    }


# ------------------------------------------------------------------------------------------------ worker
def _submodule_breakdown(torch, module, call, runs: int):
    """Seconds per call spent in each direct child of ``module`` (forward pre/post hooks)."""
    spent, starts, handles = {}, {}, []
    for name, child in module.named_children():
        for sub_name, sub in ([(name, child)] if not isinstance(child, (torch.nn.ModuleList, torch.nn.ModuleDict))
                              else [(f"{name}.{k}", c) for k, c in child.named_children()]):
            handles.append(sub.register_forward_pre_hook(
                lambda m, a, n=sub_name: starts.__setitem__(n, time.perf_counter())))
            handles.append(sub.register_forward_hook(
                lambda m, a, o, n=sub_name: spent.__setitem__(n, spent.get(n, 0.0) + time.perf_counter() - starts[n])))
    total = timed(call, 0, runs)["all"]
    for h in handles:
        h.remove()
    out = {n: t / runs for n, t in sorted(spent.items(), key=lambda kv: -kv[1])}
    out["(total)"] = sum(total) / runs
    out["(outside children)"] = out["(total)"] - sum(t for n, t in out.items() if not n.startswith("("))
    return out


def worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    cfg = bench_cfg(args.config, frames=args.frames, size=args.size)
    from detectron2.modeling import build_backbone

    from aqformer_d2.inference import build_segmenter
    from aqformer_d2.modeling.meta_arch.aqformer import MEMORY_FORMATS, resolve_memory_format

    gc.collect()
    base_peak, base_rss = max_rss_bytes(), current_rss_bytes()
    result = {"config": args.config, "target": args.worker, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "baseline_rss_mib": base_rss / MIB,
              "memory_format": resolve_memory_format(cfg)}
    torch.manual_seed(0)
    clip = random_clip(args.frames, args.size)
    with torch.inference_mode():
        if args.worker == "backbone":
            # in the layout the whole model runs it in (MODEL.AQFORMER.MEMORY_FORMAT), so that the ratio
            # compares like with like
            fmt = MEMORY_FORMATS[resolve_memory_format(cfg)]
            module = build_backbone(cfg).eval().to(memory_format=fmt)
            mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(1, -1, 1, 1)
            std = torch.tensor(cfg.MODEL.PIXEL_STD).view(1, -1, 1, 1)
            x = ((clip["images"].float() - mean) / std).contiguous(memory_format=fmt)  # [T, 3, S, S], no padding
            call = lambda: module(x)  # noqa: E731
        else:
            segmenter = build_segmenter(cfg)  # random initialisation (MODEL.WEIGHTS empty)
            module = segmenter.model
            call = lambda: segmenter(clip["images"], clip["audio"])  # noqa: E731
        result["params_m"] = sum(p.numel() for p in module.parameters()) / 1e6
        result["rss_after_build_mib"] = (current_rss_bytes() - base_rss) / MIB
        result["time_s"] = timed(call, args.warmup, args.repeats)
        result["peak_rss_mib"] = (max_rss_bytes() - base_peak) / MIB
        if args.worker == "backbone":
            return result

        # ---- parts on their real inputs (captured during one clip through the segmenter)
        captured = capture_inputs(module, [attr for _, attr in PARTS], call)
        parts = {}
        for label, attr in PARTS:
            part = getattr(module, attr)
            a, kw = captured[attr]
            stats = timed(lambda: part(*a, **kw), 1, args.repeats)
            with torch.inference_mode(False), torch.no_grad():
                pa, pkw = plain_copy((a, kw))
                flops = count_flops(part, tuple(pa) + tuple(pkw.values()))
            parts[label] = {"time_s": stats, **flops, "gflops_per_s": flops["gflops"] / stats["median"]}
        result["parts"] = parts
        pd_args, pd_kw = captured["pixel_decoder"]
        td_args, td_kw = captured["predictor"]
        result["breakdown_s"] = {
            "pixel decoder (ABTI)": _submodule_breakdown(
                torch, module.pixel_decoder, lambda: module.pixel_decoder(*pd_args, **pd_kw), args.repeats),
            "transformer decoder": _submodule_breakdown(
                torch, module.predictor, lambda: module.predictor(*td_args, **td_kw), args.repeats),
        }
        if args.profile:
            result["profile_top_ops"] = {
                "whole model": torch_profile(call, rows=15),
                "pixel decoder (ABTI)": torch_profile(lambda: module.pixel_decoder(*pd_args, **pd_kw), rows=15),
            }
    return result


# ------------------------------------------------------------------------------------------------ driver
def run_worker(args, config: str, target: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "bench.model_speed", "--worker", target, "--config", config,
               "--result-file", str(out), "--frames", str(args.frames), "--size", str(args.size),
               "--threads", str(args.threads), "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
        if args.profile:
            cmd.append("--profile")
        env = with_malloc_env(os.environ) if args.malloc == "tuned" else without_malloc_env(os.environ)
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"worker {config}/{target} failed:\n{proc.stderr[-4000:]}")
        return json.loads(out.read_text())


def report(results: dict, args) -> str:
    lines = [f"T={args.frames}, {args.size}x{args.size}, torch threads={args.threads}, eval + no_grad, "
             f"{args.repeats} timed runs after {args.warmup} warm-up; times in s (min / median / max); "
             "peak RSS = ru_maxrss after the runs minus ru_maxrss after the imports; "
             f"glibc malloc settings: {getattr(args, 'malloc', 'tuned')}.", ""]
    lines += ["| config | backbone alone: s/clip | whole model: s/clip | model / backbone | "
              "backbone peak RSS (MiB) | model peak RSS (MiB) | model params (M) |",
              "|---|---|---|---:|---:|---:|---:|"]
    for name, r in results.items():
        b, m = r["backbone"], r["model"]
        lines.append(f"| {name} | {fmt_times(b['time_s'])} | {fmt_times(m['time_s'])} | "
                     f"{m['time_s']['median'] / b['time_s']['median']:.2f}x | {b['peak_rss_mib']:.0f} | "
                     f"{m['peak_rss_mib']:.0f} | {m['params_m']:.1f} |")
    for name, r in results.items():
        m = r["model"]
        whole = m["time_s"]["median"]
        lines += ["", f"**{name}: parts** (each called alone on its real inputs; GFLOP = 10^9 multiply-adds)", "",
                  "| part | GFLOP | time median (s) | share of model time | achieved GFLOP/s |",
                  "|---|---:|---:|---:|---:|"]
        for label, p in m["parts"].items():
            lines.append(f"| {label} | {p['gflops']:.2f} | {p['time_s']['median']:.3f} | "
                         f"{p['time_s']['median'] / whole:.0%} | {p['gflops_per_s']:.1f} |")
        lines.append(f"| whole model | {sum(p['gflops'] for p in m['parts'].values()):.2f} | {whole:.3f} | 100% | |")
    goals = evaluate_goals(results)
    if goals:
        lines += ["", "| goal | measured (medians) | from min times | target | met (medians) |",
                  "|---|---:|---:|---:|---|"]
        lines += [f"| {g['goal']} | {g['measured']} | {g['measured_min']} | {g['target']} | "
                  f"{'' if g['met'] is None else 'yes' if g['met'] else 'NO'} |" for g in goals]
    for name, r in results.items():
        lines += ["", f"**{name}: where the decoder time goes** (s per call, direct children)", ""]
        for part, bd in r["model"]["breakdown_s"].items():
            top = ", ".join(f"{n} {t:.3f}" for n, t in list(bd.items())[:8])
            lines.append(f"- {part}: {top}")
        for what, ops in r["model"].get("profile_top_ops", {}).items():
            lines += ["", f"**{name}: top ops by self CPU time, {what}**", ""] + profile_markdown(ops, rows=10)
    return "\n".join(lines)


def evaluate_goals(results: dict):
    """The R50 goals, from the median times (as specified) and, as a check against CPU contention on a
    shared machine, from the minimum times (the least-disturbed runs)."""
    goals = []
    if "R50" in results:
        r = results["R50"]
        parts = r["model"]["parts"]
        ratio = {s: r["model"]["time_s"][s] / r["backbone"]["time_s"][s] for s in ("median", "min")}
        goals.append({"goal": "R50 whole model time <= 3x R50 backbone alone", "target": "<= 3x",
                      "measured": f"{ratio['median']:.2f}x", "measured_min": f"{ratio['min']:.2f}x",
                      "met": ratio["median"] <= 3.0})
        # What the ratio would be if every part ran at the backbone's own GFLOP/s: the FLOP count alone.
        floor = sum(p["gflops"] for p in parts.values()) / parts["backbone"]["gflops"]
        goals.append({"goal": "(R50 FLOP floor of that ratio: model GFLOP / backbone GFLOP)", "target": "",
                      "measured": f"{floor:.2f}x", "measured_min": "", "met": None})
        rel = {s: (parts["pixel decoder (ABTI)"]["gflops"] / parts["pixel decoder (ABTI)"]["time_s"][s])
               / (parts["backbone"]["gflops"] / parts["backbone"]["time_s"][s]) for s in ("median", "min")}
        goals.append({"goal": "R50 pixel decoder achieved GFLOP/s >= 85% of the backbone's", "target": ">= 85%",
                      "measured": f"{rel['median']:.0%}", "measured_min": f"{rel['min']:.0%}",
                      "met": rel["median"] >= 0.85})
        peak = r["model"]["peak_rss_mib"] * MIB
        goals.append({"goal": "R50 whole model peak RSS < 2 GiB", "measured": f"{peak / GIB:.2f} GiB",
                      "measured_min": "", "target": "< 2 GiB", "met": peak < 2 * GIB})
    if "PVTv2b5" in results:
        r = results["PVTv2b5"]
        ratio = {s: r["model"]["time_s"][s] / r["backbone"]["time_s"][s] for s in ("median", "min")}
        goals.append({"goal": "PVT-v2-b5 whole model time <= 1.5x its backbone alone", "target": "<= 1.5x",
                      "measured": f"{ratio['median']:.2f}x", "measured_min": f"{ratio['min']:.2f}x",
                      "met": ratio["median"] <= 1.5})
        parts = r["model"]["parts"]
        floor = sum(p["gflops"] for p in parts.values()) / parts["backbone"]["gflops"]
        goals.append({"goal": "(PVT-v2-b5 FLOP floor of that ratio: model GFLOP / backbone GFLOP)", "target": "",
                      "measured": f"{floor:.2f}x", "measured_min": "", "met": None})
    return goals


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["R50", "PVTv2b5"],
                        help=f"names ({', '.join(CONFIGS)}) or config files")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--malloc", choices=["tuned", "default"], default="tuned",
                        help="glibc malloc settings of the measured processes: tuned (bench/malloc_env.py, "
                             "as the Makefile sets them) or glibc's defaults")
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="skip the torch.profiler tables")
    parser.add_argument("--out", default=str(RESULTS / "model_speed.json"))
    parser.add_argument("--worker", choices=["backbone", "model"], help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    parser.add_argument("--profile", dest="profile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        Path(args.result_file).write_text(json.dumps(worker(args)))
        return 0

    load_before = os.getloadavg()
    start = time.time()
    results = {}
    for config in args.configs:
        results[config] = {}
        for target in ("backbone", "model"):
            print(f"[model_speed] {config}: {target} ...", flush=True)
            results[config][target] = run_worker(args, config, target)
    text = report(results, args)
    print()
    print(text)
    payload = {
        "command": " ".join([".venv/bin/python", "-m", "bench.model_speed"] + list(argv if argv is not None else sys.argv[1:])),
        "machine": machine(),
        "settings": {k: getattr(args, k) for k in ("configs", "frames", "size", "threads", "warmup", "repeats", "malloc")},
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "wall_s": time.time() - start,
        "results": results,
        "goals": evaluate_goals(results),
        "markdown": text,
    }
    out = write_json(args.out, payload)
    print(f"\nwrote {out} (load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
