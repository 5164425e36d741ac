"""CUDA check of the full-size models: the paper's training batch on one GPU.

    .venv/bin/python -m bench.cuda_check [--configs R50 PVTv2b5] [--repeats 5] [--out results.json]
    .venv/bin/python -m bench.cuda_check --device cpu --configs tiny --repeats 1   # the same code on the CPU

For ResNet-50 (8 clips per step, the paper's S4 batch) and PVT-v2-b5 (4 clips) at T = 5, 224 x 224, random
initialisation (``torch.manual_seed(0)``):

- eval: one clip (:func:`bench.common.random_clip`) through the package's segmenter
  (``aqformer_d2.inference.build_segmenter``, the PyTorch backend, on the device): median of ``--repeats``
  after 2 warm-up clips;
- training: the trainer of ``train_net.py`` (``AQFormerTrainer``: the config's data loader, optimizer,
  gradient clipping and hooks) for 2 + ``--repeats`` steps of the config's batch on a SynthAVS-S4
  generated at 224 x 224 (``--clips`` training clips under ``--data``): the median step time of the last
  ``--repeats`` steps (detectron2's IterationTimer; each step waits for the previous one's GPU work when
  it logs the losses), the peak GPU memory of the training, the last step's loss and whether every
  gradient was finite after every step.

Needs CUDA unless ``--device cpu``. Writes ``--out`` (default bench/results/cuda_check.json).
"""
import argparse
import os
import sys

from bench.common import CONFIGS, RESULTS, ROOT, bench_cfg, config_file, machine, random_clip, summarize, \
    synthavs_s4, timed, train_steps, write_json


def finite_grads_hook():
    """A trainer hook that records whether every gradient is finite after every step (``all_finite``)."""
    import torch
    from detectron2.engine import HookBase

    class FiniteGrads(HookBase):
        all_finite = True

        def after_step(self):
            grads = [p.grad for p in self.trainer.model.parameters() if p.grad is not None]
            self.all_finite = self.all_finite and all(bool(torch.isfinite(g).all()) for g in grads)

    return FiniteGrads()


def check(name: str, args) -> dict:
    import torch

    from aqformer_d2.inference import build_segmenter

    cuda = torch.device(args.device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else None
    batch = CONFIGS[name].train_batch if name in CONFIGS else 8
    cfg = bench_cfg(name, device=args.device, frames=5, size=224)
    torch.manual_seed(0)
    segmenter = build_segmenter(cfg)  # random initialisation (MODEL.WEIGHTS empty)
    clip = random_clip(5, 224)
    probs = segmenter(clip["images"], clip["audio"])  # [5, 224, 224]
    if probs.shape != (5, 224, 224):
        raise RuntimeError(f"{name}: segmenter output {probs.shape}, expected (5, 224, 224)")
    eval_s = timed(lambda: segmenter(clip["images"], clip["audio"]), 2, args.repeats, sync)["median"]
    params_m = sum(p.numel() for p in segmenter.model.parameters()) / 1e6
    del segmenter

    data = synthavs_s4(os.path.join(args.data, "SynthAVS_224"), args.clips, image_size=224)
    train_cfg = bench_cfg(name, [
        "DATASETS.SYNTHAVS_ROOT", data, "DATASETS.TRAIN", "('synthavs_s4_train',)", "DATASETS.TEST", "()",
        "TEST.EVAL_PERIOD", 0, "SOLVER.MAX_ITER", 2 + args.repeats, "SOLVER.IMS_PER_BATCH", batch,
        "SOLVER.CHECKPOINT_PERIOD", 10 ** 9, "OUTPUT_DIR", os.path.join(args.work_dir, name),
    ], device=args.device, frames=5, size=224)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    finite = finite_grads_hook()
    run = train_steps(train_cfg, warmup=2, hooks=[finite])
    row = {"config": name, "config_file": os.path.relpath(config_file(name), ROOT), "clips_per_step": batch,
           "eval_s_per_clip": round(eval_s, 4), "train_s_per_step": round(summarize(run["step_s"])["median"], 4),
           "loss": round(run["loss_per_step"][-1], 4), "finite_grads": finite.all_finite, "params_m": round(params_m, 2)}
    if cuda:
        row["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    return row


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["R50", "PVTv2b5"], help=f"names ({', '.join(CONFIGS)}) or files")
    p.add_argument("--device", default="cuda", help="cuda[:N] (default) or cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--clips", type=int, default=16, help="SynthAVS-S4 training clips to generate")
    p.add_argument("--data", default="output/cuda_check/data", help="folder of the generated SynthAVS")
    p.add_argument("--work-dir", default="output/cuda_check/run", help="trainer OUTPUT_DIR (one folder per config)")
    p.add_argument("--out", default=str(RESULTS / "cuda_check.json"))
    args = p.parse_args(argv)
    import torch

    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench.cuda_check: CUDA is not available (--device cpu runs it on the CPU)")
    rows = [check(name, args) for name in args.configs]
    device = torch.cuda.get_device_name(0) if torch.device(args.device).type == "cuda" else machine()["cpu"]
    report = {"command": " ".join([".venv/bin/python", "-m", "bench.cuda_check"] + list(argv if argv is not None else sys.argv[1:])),
              "device": device, "machine": machine(), "torch": torch.__version__, "rows": rows}
    write_json(args.out, report)
    for row in rows:
        print(row)
    return report


if __name__ == "__main__":
    main()
