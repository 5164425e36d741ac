#!/usr/bin/env python
"""Training speed of the main job (``make demo``): frames per second of detectron2's trainer on the CPU.

    .venv/bin/python bench/train_speed.py                       # tiny S4 config, 10 warm-up + 40 timed steps
    .venv/bin/python bench/train_speed.py --steps 60 --profile  # also a torch.profiler table of 3 steps
    .venv/bin/python bench/train_speed.py --steps 20 --parts    # also forward / forward+backward per model part

What it runs: the trainer of ``make demo`` (``AQFormerTrainer`` with ``configs/synthavs/aqformer_tiny_s4.yaml``,
the same data loader, mapper, workers, optimizer, clipping and hooks), on a small SynthAVS-S4 generated
with the main job's parameters (``--clips`` training clips, default 96; the clip count does not change
the cost of a step) under ``--data`` (default ``output/train_speed/data``, generated once), with
evaluation and checkpoints switched off. ``OMP_NUM_THREADS`` and ``torch.set_num_threads`` as the main
job has them (``make demo`` exports OMP_NUM_THREADS=2; ``--threads`` overrides).

glibc malloc: ``--malloc tuned`` (default) runs with the settings of ``aqformer_d2/utils/malloc_env.py``,
which the Makefile exports for ``make demo``; ``--malloc default`` with glibc's defaults (how the main job
ran before those settings). The script restarts itself when its environment does not match.

What it reports, from detectron2's own per-iteration records (``time`` of the IterationTimer hook,
``data_time`` of SimpleTrainer), over the timed steps only (the first ``--warmup`` are dropped):
seconds per step (min / median / mean / max), frames per second = IMS_PER_BATCH * NUM_FRAMES / median
step time, the data-loading share, and the loss of every step (``total_loss``), so that two runs of
different code can be checked to follow the same loss curve (same seed: the same initial weights, as
``make demo`` seeds them, and the same data order). Writes
``--out`` (default bench/results/train_speed.json); the load average before and after is recorded.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default="configs/synthavs/aqformer_tiny_s4.yaml")
    p.add_argument("--warmup", type=int, default=10,
                   help="steps run before timing starts (>= 2: detectron2's IterationTimer times none of the first two)")
    p.add_argument("--steps", type=int, default=40, help="timed steps")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: OMP_NUM_THREADS or 2)")
    p.add_argument("--clips", type=int, default=96, help="SynthAVS-S4 training clips to generate")
    p.add_argument("--data", default="output/train_speed/data", help="SynthAVS root (generated if absent)")
    p.add_argument("--work-dir", default="output/train_speed/run", help="trainer OUTPUT_DIR")
    p.add_argument("--profile", action="store_true", help="profile 3 extra steps (torch.profiler, top ops)")
    p.add_argument("--parts", action="store_true",
                   help="forward and forward+backward time of each part of the model on one batch's real inputs")
    p.add_argument("--malloc", choices=["tuned", "default"], default="tuned",
                   help="tuned: glibc malloc settings of aqformer_d2/utils/malloc_env.py, as `make demo` runs "
                        "(the script restarts itself with them); default: glibc's defaults")
    p.add_argument("--out", default="bench/results/train_speed.json")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="extra config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    if args.warmup < 2 or args.steps < 1:
        p.error(f"--warmup must be >= 2 (detectron2's IterationTimer records no time for the first two steps) "
                f"and --steps >= 1; got --warmup {args.warmup} --steps {args.steps}")
    return args


PARTS = ("backbone", "audio_encoder", "pixel_decoder", "pixel_decoder.encoder", "pixel_decoder.abti.4",
         "pixel_decoder.output_conv", "predictor", "criterion")


def _leaves(obj, fn):
    import torch  # imported by main() after OMP_NUM_THREADS is set

    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_leaves(v, fn) for v in obj)
    if isinstance(obj, dict):
        return {k: _leaves(v, fn) for k, v in obj.items()}
    return obj


def part_times(trainer, repeats: int = 9) -> dict:
    """Median forward and forward + backward seconds of each of PARTS (those the model has) called alone on
    the inputs it received in one training forward (captured with forward pre-hooks, detached, floating
    inputs made leaves that require gradients); the backward is of the sum of every output that requires a
    gradient."""
    import torch

    model = trainer._trainer.model
    names = [n for n in PARTS if n in dict(model.named_modules())]
    captured, handles = {}, []
    for name in names:
        handles.append(model.get_submodule(name).register_forward_pre_hook(
            lambda m, a, kw, name=name: captured.__setitem__(name, (a, kw)), with_kwargs=True))
    batch = next(trainer._trainer._data_loader_iter)
    model(batch)
    for h in handles:
        h.remove()
    leaf = lambda t: t.detach().requires_grad_(t.is_floating_point())  # noqa: E731
    out = {}
    for name in names:
        module = model.get_submodule(name)
        args, kwargs = _leaves(captured[name], leaf)

        def run(backward: bool):
            result = module(*args, **kwargs)
            grads = []
            _leaves(result, lambda t: grads.append(t.sum()) if t.requires_grad else None)
            if backward and grads:
                torch.autograd.backward(grads)

        times = {}
        for label, backward in (("forward_s", False), ("forward_backward_s", True)):
            run(backward)
            samples = []
            for _ in range(repeats):
                start = time.perf_counter()
                run(backward)
                samples.append(time.perf_counter() - start)
            times[label] = statistics.median(samples)
        out[name] = times
    model.zero_grad(set_to_none=True)
    return out


def profile_steps(trainer, steps: int, rows: int = 20):
    from detectron2.utils.events import EventStorage
    from torch.profiler import ProfilerActivity, profile

    with EventStorage(trainer.iter), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            trainer._trainer.run_step()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "self_cpu_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
             "self_share": e.self_cpu_time_total / total, "calls_per_step": e.count / steps} for e in events[:rows]]


def restart_with_malloc_env(mode: str, argv) -> tuple:
    """glibc reads its malloc settings at process start: if this process's environment does not match
    ``mode`` ("tuned" = aqformer_d2/utils/malloc_env.py's MALLOC_ENV, "default" = none of them), start this
    script again in its place with the matching environment. Returns the names of the malloc variables
    (for the record) when no restart was needed."""
    import importlib.util

    # the module file alone (no package import, which would load torch before the restart)
    spec = importlib.util.spec_from_file_location("malloc_env", ROOT / "aqformer_d2" / "utils" / "malloc_env.py")
    malloc_env = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(malloc_env)
    env = malloc_env.with_malloc_env(os.environ) if mode == "tuned" else malloc_env.without_malloc_env(os.environ)
    if env != dict(os.environ):
        if os.environ.get("AQ_TRAIN_SPEED_RESTARTED"):
            raise RuntimeError(f"train_speed: could not set the malloc environment for --malloc {mode}")
        env["AQ_TRAIN_SPEED_RESTARTED"] = "1"
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve())] + list(argv), env)
    return tuple(malloc_env.MALLOC_ENV)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    malloc_keys = restart_with_malloc_env(args.malloc, argv)
    threads = args.threads or int(os.environ.get("OMP_NUM_THREADS", "2"))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)
    import aqformer_d2  # noqa: F401  (registration)
    from aqformer_d2.data.synthavs import generate_synthavs
    from aqformer_d2.engine import build_cfg
    from aqformer_d2.engine.trainer import AQFormerTrainer

    sys.path.insert(0, str(ROOT / "tools"))
    from run_demo_job import SYNTHAVS_PARAMS  # the main job's SynthAVS parameters

    data = str(ROOT / args.data)
    params = dict(SYNTHAVS_PARAMS, variant="s4")
    generate_synthavs(data, n_train=args.clips, n_val=8, n_test=8, **params)

    total_iters = args.warmup + args.steps
    cfg = build_cfg(str(ROOT / args.config_file), [
        "DATASETS.SYNTHAVS_ROOT", data, "OUTPUT_DIR", str(ROOT / args.work_dir), "DATASETS.TEST", "()",
        "TEST.EVAL_PERIOD", "0", "SOLVER.MAX_ITER", str(total_iters), "SOLVER.CHECKPOINT_PERIOD", "1000000",
    ] + list(args.opts))
    load_before = os.getloadavg()
    # the model's initial weights from SEED, as the main job draws them (tools/run_demo_job.py), so that two
    # runs with the same SEED start from the same weights and see the same data
    torch.manual_seed(cfg.SEED if cfg.SEED >= 0 else 0)
    trainer = AQFormerTrainer(cfg)
    trainer.resume_or_load(resume=False)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    load_after = os.getloadavg()

    hist = trainer.storage.histories()
    step_times = [v for v, it in hist["time"].values() if it >= args.warmup]
    data_times = [v for v, it in hist["data_time"].values() if it >= args.warmup]
    losses = [v for v, it in hist["total_loss"].values()]
    frames_per_step = cfg.SOLVER.IMS_PER_BATCH * cfg.MODEL.AQFORMER.NUM_FRAMES
    med = statistics.median(step_times)
    result = {
        "command": " ".join([sys.executable] + sys.argv),
        "config": args.config_file, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "ims_per_batch": cfg.SOLVER.IMS_PER_BATCH, "num_frames": cfg.MODEL.AQFORMER.NUM_FRAMES,
        "image_size": cfg.INPUT.IMAGE_SIZE, "num_workers": cfg.DATALOADER.NUM_WORKERS,
        "malloc": args.malloc, "malloc_env": {k: os.environ.get(k) for k in malloc_keys},
        "warmup": args.warmup, "steps": args.steps, "wall_s": wall,
        "step_s": {"min": min(step_times), "median": med, "mean": statistics.fmean(step_times),
                   "max": max(step_times)},
        "data_s_median": statistics.median(data_times),
        "frames_per_s": frames_per_step / med,
        "loss_per_step": losses,
        "load_average_before": load_before, "load_average_after": load_after,
    }
    if args.profile:
        result["profile_top_ops"] = profile_steps(trainer, 3)
    if args.parts:
        result["part_times"] = part_times(trainer)
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    s = result["step_s"]
    print(f"{args.config_file}: {threads} threads, batch {cfg.SOLVER.IMS_PER_BATCH} x T={cfg.MODEL.AQFORMER.NUM_FRAMES}"
          f" at {cfg.INPUT.IMAGE_SIZE} px; {args.steps} timed steps after {args.warmup}")
    print(f"step s: min {s['min']:.3f} median {s['median']:.3f} mean {s['mean']:.3f} max {s['max']:.3f}; "
          f"data {result['data_s_median']:.3f} s; {result['frames_per_s']:.1f} frames/s; "
          f"load {load_before[0]:.2f} -> {load_after[0]:.2f}")
    print("loss per step:", " ".join(f"{v:.3f}" for v in losses))
    for row in result.get("profile_top_ops", []):
        print(f"  {row['op']:<45} {row['self_cpu_ms_per_step']:8.1f} ms/step {row['self_share']:6.1%} "
              f"{row['calls_per_step']:7.0f} calls/step")
    for name, t in result.get("part_times", {}).items():
        print(f"  {name:<28} forward {t['forward_s'] * 1e3:6.1f} ms  forward+backward {t['forward_backward_s'] * 1e3:6.1f} ms")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
