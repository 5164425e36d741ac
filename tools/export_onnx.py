#!/usr/bin/env python
"""Export AQFormer to ONNX for clips of a fixed size (T = MODEL.AQFORMER.NUM_FRAMES, H = W = INPUT.IMAGE_SIZE).

    .venv/bin/python tools/export_onnx.py --config-file configs/avsbench/s4/aqformer_R50.yaml \\
        --output model.onnx MODEL.WEIGHTS output/avsbench_s4_R50/model_final.pth
    .venv/bin/python demo/demo.py --config-file configs/avsbench/s4/aqformer_R50.yaml --input video.mp4 \\
        --output out/ --backend onnxruntime --onnx model.onnx

The file holds the weights and one graph: inputs ``frames`` uint8 [T, 3, H, W] (INPUT.FORMAT channel
order) and ``audio`` float32 [T, 1, 96, 64] (VGGish log-mel examples), output ``probs`` float32 [T, H, W]
(sound probabilities). T, H, W, the channel order, the config file and MODEL.WEIGHTS are stored in the
model's metadata; the demo refuses a file exported for another T or size.

After writing, the tool checks the graph (both inputs present and read by nodes) and, unless
``--no-verify``, runs the file with ONNX Runtime on a random clip that differs from the trace's example
input and compares it with PyTorch eager: it fails when max |delta prob| exceeds ``--tolerance``.
"""
import argparse
import json
import logging
import os
import sys
import time

import aqformer_d2  # noqa: F401  (registers the components; must precede detectron2.modeling)
from aqformer_d2.engine import build_cfg
import numpy as np
import torch
from detectron2.utils.logger import setup_logger

from aqformer_d2.inference import (
    DEFAULT_OPSET,
    OnnxRuntimeSegmenter,
    TorchSegmenter,
    build_inference_model,
    export_clip_onnx,
)

logger = logging.getLogger("aqformer_export_onnx")
# Seed of the verification clip; the trace's example clip uses seed 0 (export_clip_onnx's default).
VERIFY_SEED = 12345


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to the config file")
    parser.add_argument("--output", default="model.onnx", metavar="FILE", help="ONNX file to write (model.onnx)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the ONNX Runtime vs PyTorch comparison on a random clip")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="largest max |delta prob| the verification accepts (default 1e-3: the float32 "
                             "round-off bound of tests/inference/test_segmenter.py, 3.75e-4, with a margin)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help="config overrides, e.g. MODEL.WEIGHTS model_final.pth")
    return parser


def setup_cfg(args):
    if len(args.opts) % 2:
        raise ValueError(f"config overrides need KEY VALUE pairs, got an odd number of items: {args.opts}")
    # the trace and the file are device-independent; export on the CPU. build_cfg imports IMPORTS first.
    return build_cfg(args.config_file, list(args.opts) + ["MODEL.DEVICE", "cpu"])


def verify(model: torch.nn.Module, cfg, path: str, tolerance: float) -> float:
    """max |delta prob| of ONNX Runtime vs PyTorch eager on a random clip unlike the trace's example."""
    onnx_segmenter = OnnxRuntimeSegmenter(path)
    size = onnx_segmenter.height
    torch_segmenter = TorchSegmenter(model=model, height=size, width=onnx_segmenter.width,
                                     input_format=cfg.INPUT.FORMAT)
    g = torch.Generator().manual_seed(VERIFY_SEED)
    frames = torch.randint(0, 256, onnx_segmenter.frames_shape, generator=g, dtype=torch.uint8)
    audio = torch.randn(onnx_segmenter.audio_shape, generator=g)
    delta = float(np.abs(onnx_segmenter(frames, audio) - torch_segmenter(frames, audio)).max())
    if not delta <= tolerance:
        raise ValueError(
            f"{path}: ONNX Runtime and PyTorch disagree on a random clip: max |delta prob| = {delta:.3g} > {tolerance:g}"
        )
    return delta


def main(argv=None) -> dict:
    args = get_parser().parse_args(argv)
    setup_logger(name="aqformer_export_onnx")
    setup_logger(name="aqformer_d2")
    cfg = setup_cfg(args)
    start = time.perf_counter()
    model = build_inference_model(cfg)
    size = int(cfg.INPUT.IMAGE_SIZE)
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    metadata = export_clip_onnx(
        model,
        args.output,
        num_frames=int(cfg.MODEL.AQFORMER.NUM_FRAMES),
        height=size,
        width=size,
        input_format=cfg.INPUT.FORMAT,
        extra_metadata={"config_file": os.path.abspath(args.config_file), "weights": cfg.MODEL.WEIGHTS,
                        "opts": json.dumps(args.opts), "torch": torch.__version__},
        opset=args.opset,
    )
    export_s = time.perf_counter() - start
    summary = {
        "output": os.path.abspath(args.output),
        "size_bytes": os.path.getsize(args.output),
        "metadata": metadata,
        "opset": args.opset,
        "export_seconds": round(export_s, 3),
    }
    if not args.no_verify:
        summary["verify_max_abs_delta_prob"] = verify(model, cfg, args.output, args.tolerance)
        logger.info("ONNX Runtime vs PyTorch on a random clip: max |delta prob| = %.3g",
                    summary["verify_max_abs_delta_prob"])
    return summary


if __name__ == "__main__":
    try:
        result = main()
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(result, indent=2))
