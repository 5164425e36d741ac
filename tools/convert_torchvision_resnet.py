#!/usr/bin/env python
"""Convert a local torchvision ResNet state dict (.pth / .safetensors) into a detectron2 checkpoint.

    python tools/convert_torchvision_resnet.py resnet50-0676ba61.pth R-50-torchvision.pth
    python tools/convert_torchvision_resnet.py torchvision://resnet50 R-50-torchvision.pth   # fetched into the cache

``MODEL.WEIGHTS torchvision://resnet50`` does the same conversion on the fly; this tool is the manual route.

The output ``{"model": {"backbone.<detectron2 name>": tensor}, "__author__": "torchvision",
"matching_heuristics": False}`` loads with detectron2's ``DetectionCheckpointer`` or
``aqformer_d2.checkpoint.AQCheckpointer`` through ``MODEL.WEIGHTS``. Use it with
``MODEL.RESNETS.STRIDE_IN_1X1 False``, ``INPUT.FORMAT RGB``, ``MODEL.PIXEL_MEAN [123.675, 116.28, 103.53]``
and ``MODEL.PIXEL_STD [58.395, 57.12, 57.375]`` (torchvision's conventions).
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import List, Optional

import aqformer_d2  # noqa: F401  (detectron2 compatibility before detectron2 imports)
from aqformer_d2.checkpoint import (
    convert_torchvision_resnet_state_dict,
    load_state_dict_file,
    local_weight_file,
    save_weights_checkpoint,
)

logger = logging.getLogger("convert_torchvision_resnet")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "input", help="torchvision ResNet state dict (.pth/.pt/.bin/.safetensors) or torchvision://resnet50"
    )
    parser.add_argument("output", help="detectron2 checkpoint to write (.pth)")
    parser.add_argument(
        "--prefix", default="backbone.",
        help="attribute path of the ResNet inside the detectron2 model (default: 'backbone.')",
    )
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> str:
    """Run the conversion; returns the output path."""
    args = parse_args(argv)
    source = local_weight_file(args.input)
    state_dict = load_state_dict_file(source)
    model_state, _ = convert_torchvision_resnet_state_dict(state_dict, prefix=args.prefix, source=source)
    save_weights_checkpoint(args.output, model_state, "torchvision")
    logger.info("Wrote %d tensors to %s", len(model_state), args.output)
    return args.output


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
