#!/usr/bin/env python
"""Does ``torch.compile`` pay on the CPU? The pixel decoder (the model's costliest part) eager vs compiled.

    .venv/bin/python bench/compile_speed.py [--config R50] [--threads 2] [--repeats 5]

Builds the config's model (random initialisation, seed 0, one clip of T = 5 frames at 224x224, eval,
``torch.no_grad``), captures the pixel decoder's real inputs during one forward, then times the pixel
decoder (median of ``--repeats`` calls): eager; ``torch.compile`` (Inductor, default options); and
``torch.compile`` with Inductor's ``freezing`` (weights folded as constants, which lets it use its own
prepacked oneDNN linear layers). The first compiled call's time, with an empty Inductor cache, is reported
as the cold start. Needs a
C++ compiler (Inductor generates C++). Writes ``--out`` (default bench/results/compile_speed.json).
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
sys.path.insert(0, str(ROOT / "bench"))

from model_speed import CONFIGS, _clip  # noqa: E402  (the same configs and clip as bench/model_speed.py)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="R50", help="R50, PVTv2b5, tiny or a config file")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "compile_speed.json"))
    args = p.parse_args(argv)
    # a fresh Inductor cache, so that the first compiled call is a true cold start
    import tempfile

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="aq_inductor_")
    import torch

    torch.set_num_threads(args.threads)
    import torch._inductor.config as inductor_config

    import aqformer_d2
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    aqformer_d2.add_aqformer_config(cfg)
    cfg.merge_from_file(str(ROOT / CONFIGS.get(args.config, args.config)))
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    clip = _clip(torch, argparse.Namespace(frames=5, size=224))
    captured = {}
    hook = model.pixel_decoder.register_forward_pre_hook(
        lambda m, a, kw: captured.__setitem__("inputs", (a, kw)), with_kwargs=True)
    load_before = os.getloadavg()
    result = {"command": " ".join([sys.executable] + sys.argv), "config": args.config, "threads": args.threads,
              "torch": torch.__version__, "load_average_before": load_before}
    with torch.no_grad():
        model([clip])
        hook.remove()
        a, kw = captured["inputs"]

        def median_time(fn):
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            return statistics.median(times)

        reference = model.pixel_decoder(*a, **kw)[0]
        model.pixel_decoder(*a, **kw)
        result["eager_s"] = median_time(lambda: model.pixel_decoder(*a, **kw))
        for name, freezing in (("compiled", False), ("compiled_freezing", True)):
            torch._dynamo.reset()
            inductor_config.freezing = freezing
            compiled = torch.compile(model.pixel_decoder)
            start = time.perf_counter()
            out = compiled(*a, **kw)[0]
            result[f"{name}_cold_start_s"] = time.perf_counter() - start
            result[f"{name}_s"] = median_time(lambda: compiled(*a, **kw))
            result[f"{name}_max_abs_diff"] = (out - reference).abs().max().item()
    result["load_average_after"] = os.getloadavg()
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1))
    print(f"{args.config} pixel decoder, {args.threads} threads: eager {result['eager_s']:.3f} s; "
          f"torch.compile {result['compiled_s']:.3f} s (cold start {result['compiled_cold_start_s']:.1f} s); "
          f"with freezing {result['compiled_freezing_s']:.3f} s (cold start {result['compiled_freezing_cold_start_s']:.1f} s); "
          f"load {load_before[0]:.2f} -> {result['load_average_after'][0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
