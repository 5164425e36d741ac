#!/usr/bin/env python
"""CUDA check of the full-size models: the paper's training batch on one GPU.

    python bench/cuda_check.py [--out results.json]

For ResNet-50 (8 clips, the paper's S4 batch) and PVT-v2-b5 (4 clips) at T = 5, 224 x 224, random
initialisation: one eval forward per clip (median of repeats), one AdamW training step on the paper's
batch (median of repeats), peak GPU memory, and finiteness of the losses and gradients. Needs CUDA.
"""
import argparse
import json
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import aqformer_d2  # noqa: E402,F401
import torch  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

from aqformer_d2 import add_aqformer_config  # noqa: E402

CONFIGS = {"R50": ("configs/avsbench/s4/aqformer_R50.yaml", 8),
           "PVTv2b5": ("configs/avsbench/s4/aqformer_PVTv2b5.yaml", 4)}


def make_clip(size=224, frames=5, device="cuda"):
    g = torch.Generator().manual_seed(0)
    return {"images": torch.randint(0, 256, (frames, 3, size, size), dtype=torch.uint8, generator=g).to(device),
            "audio": torch.randn(frames, 1, 96, 64, generator=g).to(device),
            "masks": (torch.rand(frames, size, size, generator=g) > 0.7).to(torch.uint8).to(device),
            "mask_valid": torch.ones(frames, dtype=torch.bool, device=device), "height": size, "width": size}


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def check(name, config, batch, repeats):
    cfg = get_cfg()
    add_aqformer_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, config))
    cfg.MODEL.DEVICE = "cuda"
    torch.manual_seed(0)
    model = build_model(cfg)
    clips = [make_clip() for _ in range(batch)]
    model.eval()
    with torch.no_grad():
        out = model(clips[:1])
        assert out[0]["sound_probs"].shape == (5, 224, 224)
        timed(lambda: model(clips[:1]), 2)
        eval_s = timed(lambda: model(clips[:1]), repeats)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.05)
    torch.cuda.reset_peak_memory_stats()
    state = {}

    def step():
        losses = model(clips)
        total = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        state["loss"] = float(total)
        state["finite_grads"] = all(torch.isfinite(p.grad).all().item() for p in model.parameters()
                                    if p.grad is not None)

    timed(step, 1)
    train_s = timed(step, repeats)
    return {"backbone": name, "config": config, "clips_per_step": batch, "eval_s_per_clip": round(eval_s, 4),
            "train_s_per_step": round(train_s, 4), "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "loss": round(state["loss"], 4), "finite_grads": state["finite_grads"],
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results", "cuda_check.json"))
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/cuda_check.py needs a CUDA device")
    rows = [check(name, cfg, batch, args.repeats) for name, (cfg, batch) in CONFIGS.items()]
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
