"""Does ``torch.compile`` pay on the CPU? The pixel decoder (the model's costliest part) eager vs compiled.

    .venv/bin/python -m bench.compile_speed [--config R50] [--threads 2] [--repeats 5]

Builds the config's segmenter (``aqformer_d2.inference.build_segmenter``: random initialisation, seed 0,
eval), captures the pixel decoder's real inputs during one clip of T = 5 frames at 224x224, then times
the pixel
decoder (median of ``--repeats`` calls): eager; ``torch.compile`` (Inductor, default options); and
``torch.compile`` with Inductor's ``freezing`` (weights folded as constants, which lets it use its own
prepacked oneDNN linear layers). The first compiled call's time, with an empty Inductor cache, is reported
as the cold start. Needs a
C++ compiler (Inductor generates C++). Writes ``--out`` (default bench/results/compile_speed.json).
"""
import argparse
import os
import sys
import tempfile
import time

from bench.common import CONFIGS, RESULTS, bench_cfg, capture_inputs, machine, plain_copy, random_clip, timed, write_json


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="R50", help=f"{', '.join(CONFIGS)} or a config file")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(RESULTS / "compile_speed.json"))
    args = p.parse_args(argv)
    # a fresh Inductor cache, so that the first compiled call is a true cold start
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="aq_inductor_")
    import torch

    torch.set_num_threads(args.threads)
    import torch._inductor.config as inductor_config

    from aqformer_d2.inference import build_segmenter

    cfg = bench_cfg(args.config, frames=5, size=224)
    torch.manual_seed(0)
    segmenter = build_segmenter(cfg)  # random initialisation (MODEL.WEIGHTS empty)
    model = segmenter.model
    clip = random_clip(5, 224)
    load_before = os.getloadavg()
    result = {"command": " ".join([".venv/bin/python", "-m", "bench.compile_speed"] + list(argv if argv is not None else sys.argv[1:])),
              "machine": machine(), "config": args.config, "threads": args.threads,
              "torch": torch.__version__, "load_average_before": load_before}
    captured = capture_inputs(model, ["pixel_decoder"], lambda: segmenter(clip["images"], clip["audio"]))
    a, kw = plain_copy(captured["pixel_decoder"])  # [B*T, C, H, W] features per level, [B, T, C_a] audio
    with torch.no_grad():

        def median_time(fn):
            return timed(fn, 0, args.repeats)["median"]

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
    write_json(args.out, result, indent=1)
    print(f"{args.config} pixel decoder, {args.threads} threads: eager {result['eager_s']:.3f} s; "
          f"torch.compile {result['compiled_s']:.3f} s (cold start {result['compiled_cold_start_s']:.1f} s); "
          f"with freezing {result['compiled_freezing_s']:.3f} s (cold start {result['compiled_freezing_cold_start_s']:.1f} s); "
          f"load {load_before[0]:.2f} -> {result['load_average_after'][0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
