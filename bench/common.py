"""What the benchmarks share: configs by name, random clips, timing, memory, profiler tables, the machine.

Every benchmark builds its config with :func:`bench_cfg` (through ``aqformer_d2.engine.build_cfg``, the
config path of ``train_net.py``), its random clips with :func:`random_clip`, times with :func:`timed`,
reads memory with :func:`max_rss_bytes` / :func:`current_rss_bytes`, profiles with :func:`torch_profile`
and records the machine with :func:`machine`. torch and the package are imported inside the functions, so
that a script can set its threads and malloc environment before they load.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"  # git-ignored
MIB = 1024 ** 2
GIB = 1024 ** 3


@dataclass(frozen=True)
class BenchConfig:
    """A config the benchmarks know by name.

    Attributes:
        file: config file, relative to the repository root.
        size: frame side of the clips fed to it where a benchmark takes the config's own size.
        train_batch: clips per training step (the paper's batch for the full-size models).
    """

    file: str
    size: int
    train_batch: int


CONFIGS: Dict[str, BenchConfig] = {
    "R50": BenchConfig("configs/avsbench/s4/aqformer_R50.yaml", size=224, train_batch=8),
    "PVTv2b5": BenchConfig("configs/avsbench/s4/aqformer_PVTv2b5.yaml", size=224, train_batch=4),
    "tiny": BenchConfig("configs/synthavs/Base-Tiny.yaml", size=128, train_batch=8),
}


# ------------------------------------------------------------------------------------------------ configs
def config_file(config: str) -> str:
    """A name of :data:`CONFIGS` or a config file (absolute, or relative to the working directory or to the
    repository root) -> its path.

    Raises:
        FileNotFoundError: neither a known name nor an existing file.
    """
    if config in CONFIGS:
        return str(ROOT / CONFIGS[config].file)
    for path in (Path(config), ROOT / config):
        if path.is_file():
            return str(path)
    raise FileNotFoundError(f"{config}: not a config name ({', '.join(CONFIGS)}) nor a config file")


def bench_cfg(config: str, opts: Sequence = (), *, device: Optional[str] = "cpu", frames: Optional[int] = None,
              size: Optional[int] = None):
    """The frozen config of ``config`` (a name of :data:`CONFIGS` or a file) with ``opts`` (KEY VALUE ...)
    merged, built by ``aqformer_d2.engine.build_cfg``.

    Args:
        device: MODEL.DEVICE (None: the config's own).
        frames: MODEL.AQFORMER.NUM_FRAMES (None: the config's own T).
        size: INPUT.IMAGE_SIZE, the frame side a segmenter of this config takes (None: the config's own).
    """
    from aqformer_d2.engine import build_cfg

    opts = list(opts)
    if device is not None:
        opts += ["MODEL.DEVICE", device]
    if frames is not None:
        opts += ["MODEL.AQFORMER.NUM_FRAMES", int(frames)]
    if size is not None:
        opts += ["INPUT.IMAGE_SIZE", int(size)]
    return build_cfg(config_file(config), opts)


def default_size(config: str, cfg) -> int:
    """The frame side a benchmark feeds ``config`` by default: :attr:`BenchConfig.size`, else INPUT.IMAGE_SIZE."""
    return CONFIGS[config].size if config in CONFIGS else int(cfg.INPUT.IMAGE_SIZE)


# ------------------------------------------------------------------------------------------------ clips
def random_clip(frames: int, size: int, *, seed: int = 0, masks: bool = False) -> Dict:
    """One clip in the layout of the dataset mapper, from a ``torch.Generator`` seeded with ``seed``:
    "images" uint8 ``[T, 3, S, S]`` (uniform 0..255), "audio" float ``[T, 1, 96, 64]`` (standard normal
    log-mel examples), "height" = "width" = S, drawn in that order; with ``masks``, then "masks" uint8
    ``[T, S, S]``, one random disc per frame (centre uniform in the frame, radius 0.15-0.35 S), and
    "mask_valid" (all True).
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    clip = {
        "images": torch.randint(0, 256, (frames, 3, size, size), generator=g, dtype=torch.uint8),
        "audio": torch.randn(frames, 1, 96, 64, generator=g),
        "height": size,
        "width": size,
    }
    if masks:
        ys = torch.arange(size, dtype=torch.float32)[:, None]  # [S, 1]
        xs = torch.arange(size, dtype=torch.float32)[None, :]  # [1, S]
        discs = []
        for _ in range(frames):
            cy, cx = (torch.rand(2, generator=g) * size).tolist()
            r = size * (0.15 + 0.2 * torch.rand(1, generator=g).item())
            discs.append((((ys - cy) ** 2 + (xs - cx) ** 2) <= r ** 2).to(torch.uint8))  # [S, S]
        clip["masks"] = torch.stack(discs)  # [T, S, S]
        clip["mask_valid"] = torch.ones(frames, dtype=torch.bool)
    return clip


# ------------------------------------------------------------------------------------------------ timing
def summarize(times: Sequence[float]) -> Dict:
    """min / median / max (seconds) and every sample."""
    return {"min": min(times), "median": statistics.median(times), "max": max(times), "all": list(times)}


def timed(fn: Callable[[], object], warmup: int = 0, repeats: int = 1,
          synchronize: Optional[Callable[[], None]] = None) -> Dict:
    """Wall time of ``fn()``: ``warmup`` untimed calls, then :func:`summarize` of ``repeats`` timed ones.
    ``synchronize`` (e.g. ``torch.cuda.synchronize``) runs before the clock starts and before it stops."""
    sync = synchronize or (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return summarize(times)


def fmt_times(stats: Dict) -> str:
    return f"{stats['min']:.3f} / {stats['median']:.3f} / {stats['max']:.3f}"


# ------------------------------------------------------------------------------------------------ memory
def max_rss_bytes() -> int:
    """High-water mark of this process's resident set (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    """This process's resident set now (/proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------------------------------------ module inputs
def map_tensors(obj, fn: Callable):
    """``obj`` with ``fn`` applied to every tensor in it (nested lists, tuples and dicts)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(v, fn) for v in obj)
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    return obj


def plain_copy(obj):
    """Captured inputs as ordinary tensors: inputs captured under ``torch.inference_mode`` (a segmenter) are
    inference tensors, which fvcore's tracer and ``torch.compile`` refuse; a clone made outside inference
    mode is an ordinary tensor."""
    import torch

    with torch.inference_mode(False):
        return map_tensors(obj, lambda t: t.clone())


def capture_inputs(model, names: Sequence[str], call: Callable[[], object]) -> Dict[str, tuple]:
    """(args, kwargs) that each submodule ``names`` of ``model`` received during ``call()`` (forward pre-hooks)."""
    captured, handles = {}, []
    for name in names:
        handles.append(model.get_submodule(name).register_forward_pre_hook(
            lambda m, a, kw, name=name: captured.__setitem__(name, (a, kw)), with_kwargs=True))
    try:
        call()
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in names if n not in captured]
    if missing:
        raise RuntimeError(f"submodules {missing} did not run during the captured call")
    return captured


# ------------------------------------------------------------------------------------------------ training
def synthavs_s4(root: str, clips: int, image_size: int = 128) -> str:
    """Generate (once) a SynthAVS-S4 with the main job's parameters and ``clips`` training clips; returns ``root``."""
    from aqformer_d2.data.synthavs import BENCHMARK_PARAMS, generate_synthavs

    params = dict(BENCHMARK_PARAMS, variant="s4", image_size=image_size)
    generate_synthavs(root, n_train=clips, n_val=8, n_test=8, **params)
    return root


def train_steps(cfg, warmup: int, hooks: Sequence = ()) -> Dict:
    """Train ``cfg`` (SOLVER.MAX_ITER steps) with ``AQFormerTrainer``, the trainer of ``train_net.py`` and
    ``make demo``, from initial weights drawn from SEED as the main job draws them; ``hooks`` are added to
    the trainer's own.

    Returns the trainer and, from detectron2's per-iteration records, "step_s" (``time`` of the
    IterationTimer hook) and "data_s" (``data_time``) of the steps after the first ``warmup`` (the timer
    records none of the first two steps), "loss_per_step" (``total_loss`` of every step) and "wall_s".
    """
    import torch

    from aqformer_d2.engine import AQFormerTrainer

    if warmup < 2:
        raise ValueError(f"warmup must be >= 2 (detectron2's IterationTimer times none of the first two steps), got {warmup}")
    torch.manual_seed(cfg.SEED if cfg.SEED >= 0 else 0)
    trainer = AQFormerTrainer(cfg)
    trainer.register_hooks(list(hooks))
    trainer.resume_or_load(resume=False)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    hist = trainer.storage.histories()
    return {
        "trainer": trainer,
        "step_s": [v for v, it in hist["time"].values() if it >= warmup],
        "data_s": [v for v, it in hist["data_time"].values() if it >= warmup],
        "loss_per_step": [v for v, _ in hist["total_loss"].values()],
        "wall_s": wall,
    }


# ------------------------------------------------------------------------------------------------ profiles
def torch_profile(call: Callable[[], object], rows: int, steps: int = 1) -> Dict:
    """``torch.profiler`` (CPU) of ``call()``: the ``rows`` aten ops with the most self CPU time.

    Returns ``{"total_self_s", "top": [{"op", "self_s", "share", "total_s", "calls"}]}``, every time and
    count divided by ``steps`` (the number of steps ``call`` runs), share = of the total self time.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    return {
        "total_self_s": total * 1e-6 / steps,
        "top": [{"op": e.key, "self_s": e.self_cpu_time_total * 1e-6 / steps,
                 "share": e.self_cpu_time_total / total if total else 0.0,
                 "total_s": e.cpu_time_total * 1e-6 / steps, "calls": e.count / steps} for e in events[:rows]],
    }


def profile_markdown(profile: Dict, rows: Optional[int] = None) -> List[str]:
    """Markdown table of a :func:`torch_profile` result (or any ``{"top": [{"op", "self_s", "share"}]}``)."""
    lines = ["| op | self ms | share | calls |", "|---|---:|---:|---:|"]
    for row in profile["top"][:rows]:
        calls = f"{row['calls']:g}" if "calls" in row else ""
        lines.append(f"| {row['op']} | {row['self_s'] * 1e3:.1f} | {row['share']:.1%} | {calls} |")
    return lines


# ------------------------------------------------------------------------------------------------ machine

@dataclass
class BarSeries:
    """One series of a grouped bar chart: its legend label, one value per group and optional error bars
    ``[2, groups]`` (below, above the value)."""

    label: str
    values: Sequence[float]
    errors: Optional[object] = None


def grouped_bar_chart(path, groups: Sequence[str], series: Sequence[BarSeries], *, ylabel: str, title: str,
                      ylim: float = 1.0, legend_loc: str = "upper right", group_width: float = 0.9,
                      legend_outside: bool = False) -> None:
    """Save a PNG at ``path``: one bar group per entry of ``groups`` (tick labels), one bar per series.

    ``legend_outside`` puts the legend right of the axes (for many series, whose legend would hide bars).
    Up to 10 series take matplotlib's default colours, up to 20 distinct ones from ``tab20``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(groups))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(1.0 + group_width * len(groups), 3.6))
    # matplotlib's default cycle has 10 colours; beyond that series would share one, so take tab20's 20
    colors = [plt.get_cmap("tab20")(i) for i in range(len(series))] if len(series) > 10 else [None] * len(series)
    for i, s in enumerate(series):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, s.values, width, yerr=s.errors, capsize=2, label=s.label,
               color=colors[i])
    ax.set_xticks(x, list(groups), fontsize=8)
    ax.set_ylim(0, ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if legend_outside:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=8, loc=legend_loc)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight" if legend_outside else None)
    plt.close(fig)


def frame_group_summary(records: Sequence[Dict]) -> Dict:
    """A group of per-clip listening records (``any_fg`` ``[T]``, ``area`` ``[T]`` each): number of clips, share
    of frames with predicted foreground, mean predicted area (None for an empty group)."""
    fg = [f for r in records for f in r["any_fg"]]  # [clips * T]
    area = [a for r in records for a in r["area"]]
    return {"clips": len(records), "foreground_frames": statistics.fmean(fg) if fg else None,
            "mean_area": statistics.fmean(area) if area else None}


def frame_group_line(row: Dict) -> str:
    """``"N clips, frames with foreground 0.123, mean area 0.0012"`` for a :func:`frame_group_summary` row."""
    if row["foreground_frames"] is None:
        return f"{row['clips']} clips"
    return (f"{row['clips']} clips, frames with foreground {row['foreground_frames']:.3f}, "
            f"mean area {row['mean_area']:.4f}")


def machine() -> Dict:
    """The CPU (model name, AVX-512 or AVX2 only), core count, platform and torch version of this run."""
    import torch

    cpu, flags = "unknown", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "neither AVX2 nor AVX-512"
    return {"cpu": cpu, "isa": isa, "cpus": os.cpu_count(), "platform": platform.platform(),
            "torch": torch.__version__}


def child_env(env=None) -> Dict[str, str]:
    """A copy of ``env`` (default: this process's) whose PYTHONPATH starts with the repository root, so that a
    child started as ``python -m bench.<script>`` imports this checkout's ``bench`` and ``aqformer_d2`` from
    any working directory."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH", "")] if p])
    return env


def write_json(path, payload: Dict, indent: int = 2) -> Path:
    """``payload`` as JSON at ``path`` (folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=indent))
    return path
