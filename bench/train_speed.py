"""Training speed of the main job (``make demo``): frames per second of detectron2's trainer on the CPU.

    .venv/bin/python -m bench.train_speed                       # tiny S4 config, 10 warm-up + 40 timed steps
    .venv/bin/python -m bench.train_speed --steps 60 --profile  # also a torch.profiler table of 3 steps
    .venv/bin/python -m bench.train_speed --steps 20 --parts    # also forward / forward+backward per model part

What it runs: the trainer of ``make demo`` (``AQFormerTrainer`` with ``configs/synthavs/aqformer_tiny_s4.yaml``,
the same data loader, mapper, workers, optimizer, clipping and hooks), on a small SynthAVS-S4 generated
with the main job's parameters (``--clips`` training clips, default 96; the clip count does not change
the cost of a step) under ``--data`` (default ``output/train_speed/data``, generated once), with
evaluation and checkpoints switched off. ``OMP_NUM_THREADS`` and ``torch.set_num_threads`` as the main
job has them (``make demo`` exports OMP_NUM_THREADS=2; ``--threads`` overrides).

glibc malloc: ``--malloc tuned`` (default) runs with the settings of ``bench/malloc_env.py``, which the
Makefile exports for ``make demo``; ``--malloc default`` with glibc's defaults. The script restarts itself
when its environment does not match.

What it reports, from detectron2's own per-iteration records (``time`` of the IterationTimer hook,
``data_time`` of SimpleTrainer), over the timed steps only (the first ``--warmup`` are dropped):
seconds per step (min / median / mean / max), frames per second = IMS_PER_BATCH * NUM_FRAMES / median
step time, the data-loading share, and the loss of every step (``total_loss``), so that two runs of
different code can be checked to follow the same loss curve (same seed: the same initial weights, as
``make demo`` seeds them, and the same data order). Writes
``--out`` (default bench/results/train_speed.json); the load average before and after is recorded.
"""
import argparse
import os
import statistics
import sys
import time

from bench import malloc_env
from bench.common import ROOT


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
                   help="tuned: glibc malloc settings of bench/malloc_env.py, as `make demo` runs "
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


def part_times(trainer, repeats: int = 9) -> dict:
    """Median forward and forward + backward seconds of each of PARTS (those the model has) called alone on
    the inputs it received in one training forward (captured with forward pre-hooks, detached, floating
    inputs made leaves that require gradients); the backward is of the sum of every output that requires a
    gradient."""
    import torch

    from bench.common import capture_inputs, map_tensors, timed

    model = trainer._trainer.model
    names = [n for n in PARTS if n in dict(model.named_modules())]
    batch = next(trainer._trainer._data_loader_iter)
    captured = capture_inputs(model, names, lambda: model(batch))
    leaf = lambda t: t.detach().requires_grad_(t.is_floating_point())  # noqa: E731
    out = {}
    for name in names:
        module = model.get_submodule(name)
        args, kwargs = map_tensors(captured[name], leaf)

        def run(backward: bool):
            result = module(*args, **kwargs)
            grads = []
            map_tensors(result, lambda t: grads.append(t.sum()) if t.requires_grad else None)
            if backward and grads:
                torch.autograd.backward(grads)

        out[name] = {label: timed(lambda: run(backward), 1, repeats)["median"]
                     for label, backward in (("forward_s", False), ("forward_backward_s", True))}
    model.zero_grad(set_to_none=True)
    return out


def profile_steps(trainer, steps: int, rows: int = 20) -> dict:
    """torch.profiler table of ``steps`` more training steps, per step (:func:`bench.common.torch_profile`)."""
    from detectron2.utils.events import EventStorage

    from bench.common import torch_profile

    def run():
        with EventStorage(trainer.iter):
            for _ in range(steps):
                trainer._trainer.run_step()

    return torch_profile(run, rows, steps=steps)


def restart_with_malloc_env(mode: str, argv) -> tuple:
    """glibc reads its malloc settings at process start: if this process's environment does not match
    ``mode`` ("tuned" = bench/malloc_env.py's MALLOC_ENV, "default" = none of them), start this script
    again in its place with the matching environment (torch is not loaded yet). Returns the names of the
    malloc variables (for the record) when no restart was needed."""
    env = malloc_env.with_malloc_env(os.environ) if mode == "tuned" else malloc_env.without_malloc_env(os.environ)
    if env != dict(os.environ):
        if os.environ.get("AQ_TRAIN_SPEED_RESTARTED"):
            raise RuntimeError(f"train_speed: could not set the malloc environment for --malloc {mode}")
        env["AQ_TRAIN_SPEED_RESTARTED"] = "1"
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, "-m", "bench.train_speed"] + list(argv), env)
    return tuple(malloc_env.MALLOC_ENV)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    malloc_keys = restart_with_malloc_env(args.malloc, argv)
    threads = args.threads or int(os.environ.get("OMP_NUM_THREADS", "2"))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)
    from bench.common import bench_cfg, machine, profile_markdown, synthavs_s4, train_steps, write_json

    data = synthavs_s4(str(ROOT / args.data), args.clips)  # the main job's SynthAVS parameters
    total_iters = args.warmup + args.steps
    cfg = bench_cfg(args.config_file, [
        "DATASETS.SYNTHAVS_ROOT", data, "OUTPUT_DIR", str(ROOT / args.work_dir), "DATASETS.TEST", "()",
        "TEST.EVAL_PERIOD", "0", "SOLVER.MAX_ITER", str(total_iters), "SOLVER.CHECKPOINT_PERIOD", "1000000",
    ] + list(args.opts), device=None)
    load_before = os.getloadavg()
    # the model's initial weights from SEED, as the main job draws them, so that two runs with the same SEED
    # start from the same weights and see the same data
    run = train_steps(cfg, args.warmup)
    trainer, wall = run["trainer"], run["wall_s"]
    load_after = os.getloadavg()
    step_times, data_times, losses = run["step_s"], run["data_s"], run["loss_per_step"]
    frames_per_step = cfg.SOLVER.IMS_PER_BATCH * cfg.MODEL.AQFORMER.NUM_FRAMES
    med = statistics.median(step_times)
    result = {
        "command": " ".join([".venv/bin/python", "-m", "bench.train_speed"] + list(argv)), "machine": machine(),
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
    out = write_json(ROOT / args.out, result, indent=1)
    s = result["step_s"]
    print(f"{args.config_file}: {threads} threads, batch {cfg.SOLVER.IMS_PER_BATCH} x T={cfg.MODEL.AQFORMER.NUM_FRAMES}"
          f" at {cfg.INPUT.IMAGE_SIZE} px; {args.steps} timed steps after {args.warmup}")
    print(f"step s: min {s['min']:.3f} median {s['median']:.3f} mean {s['mean']:.3f} max {s['max']:.3f}; "
          f"data {result['data_s_median']:.3f} s; {result['frames_per_s']:.1f} frames/s; "
          f"load {load_before[0]:.2f} -> {load_after[0]:.2f}")
    print("loss per step:", " ".join(f"{v:.3f}" for v in losses))
    if "profile_top_ops" in result:
        print("\n".join(["torch.profiler, per step:"] + profile_markdown(result["profile_top_ops"])))
    for name, t in result.get("part_times", {}).items():
        print(f"  {name:<28} forward {t['forward_s'] * 1e3:6.1f} ms  forward+backward {t['forward_backward_s'] * 1e3:6.1f} ms")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
