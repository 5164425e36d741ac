"""Activation memory of one training forward + backward of the AVSS model (or another config) on the CPU.

    python -m bench.avss_memory                          # AVSS R50, one 10-frame clip at 224
    python -m bench.avss_memory --set MODEL.AQ_SEMANTIC.NUM_QUERIES 50
    python -m bench.avss_memory --config configs/avsbench/s4/aqformer_R50.yaml --frames 10

One clip of ``--frames`` random frames (``--size`` square) with random AVSS labels (background plus two objects
per frame, every frame supervised) or, for a binary config, random masks; random weights (no download). Each
measurement runs in a fresh process and reports:

* saved-for-backward bytes: the tensors autograd keeps from the forward for the backward, counted once per
  storage (``torch.autograd.graph.saved_tensors_hooks``), parameters and buffers excluded: the activation memory
  of the step, independent of the allocator and of the machine's vector ISA;
* peak RSS increase of the process from just before the forward to the end of the backward (``ru_maxrss``):
  activations plus gradients, transient workspaces and allocator slack; an upper bound of what the step adds.

Float32 unless ``--bf16`` (CPU autocast to bfloat16: the nearest CPU stand-in for the GPU recipe's AMP, whose
float16 activations are as wide). Memory is not time: the figures do not depend on other load on the machine.
Writes one JSON line per run to stdout and, with ``--out``, to that file.
"""
import argparse
import json
import os
import resource
import subprocess
import sys

DEFAULT_CONFIG = "configs/avsbench/avss/aqformer_R50.yaml"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--bf16", action="store_true", help="run under CPU autocast to bfloat16")
    p.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="config override (repeatable)")
    p.add_argument("--out", default="")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _clip(torch, frames, size, semantic, num_classes):
    g = torch.Generator().manual_seed(0)
    clip = {"images": torch.randint(0, 256, (frames, 3, size, size), generator=g, dtype=torch.uint8),
            "audio": torch.randn(frames, 1, 96, 64, generator=g), "mask_valid": torch.ones(frames, dtype=torch.bool),
            "height": size, "width": size}
    if semantic:
        labels = torch.zeros(frames, size, size, dtype=torch.int64)
        for t in range(frames):
            for c in (1 + t % (num_classes - 1), 1 + (t + 3) % (num_classes - 1)):
                y, x = (int(v) for v in torch.randint(0, size // 2, (2,), generator=g))
                labels[t, y:y + size // 3, x:x + size // 3] = c
        clip["sem_seg"], clip["frame_valid"] = labels, torch.ones(frames, dtype=torch.bool)
    else:
        clip["masks"] = (torch.rand(frames, size, size, generator=g) > 0.7).to(torch.uint8)
    return clip


def measure(args) -> dict:
    """One measurement in this process (see the module docstring)."""
    import torch

    from aqformer_d2.modeling import build_aq_model

    from bench.common import bench_cfg

    opts = [item for pair in args.set for item in pair]
    cfg = bench_cfg(args.config, opts, frames=args.frames)
    torch.manual_seed(0)
    model = build_aq_model(cfg).train()
    semantic = cfg.MODEL.META_ARCHITECTURE == "AQFormerSemantic"
    clip = _clip(torch, args.frames, args.size, semantic, cfg.MODEL.AQ_SEMANTIC.NUM_CLASSES)

    fixed = {p.untyped_storage().data_ptr() for p in model.parameters()}
    fixed |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in fixed:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    rss_before = _rss_bytes()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            losses = model([clip])
        total = sum(losses.values())
    total.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    return {
        "config": args.config, "overrides": args.set, "frames": args.frames, "size": args.size, "bf16": args.bf16,
        "saved_for_backward_bytes": sum(saved.values()),
        "saved_for_backward_GiB": round(sum(saved.values()) / 2**30, 3),
        "peak_rss_increase_GiB": round((peak - rss_before) / 2**30, 3),
        "gradients_GiB": round(grads / 2**30, 3),
        "trainable_parameters_M": round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 2),
        "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "total_loss": round(total.item(), 3),
    }


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure(args)))
        return
    # a fresh process per measurement: ru_maxrss is the process's lifetime peak
    cmd = [sys.executable, "-m", "bench.avss_memory", "--child", "--config", args.config, "--frames", str(args.frames),
           "--size", str(args.size)] + (["--bf16"] if args.bf16 else [])
    for key, value in args.set:
        cmd += ["--set", key, value]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    print(out)
    if args.out:
        with open(args.out, "a") as f:
            f.write(out + "\n")


if __name__ == "__main__":
    main()
