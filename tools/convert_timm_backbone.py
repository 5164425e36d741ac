#!/usr/bin/env python
"""Convert a local timm checkpoint (.pth / .bin / .safetensors) into a detectron2 checkpoint for AQTimmBackbone.

    python tools/convert_timm_backbone.py pvt_v2_b5.pth pvt_v2_b5_d2.pth --model pvt_v2_b5
    python tools/convert_timm_backbone.py timm://pvt_v2_b5 pvt_v2_b5_d2.pth --model pvt_v2_b5   # fetched into the cache

Keys are renamed to the timm ``features_only`` model and prefixed with ``backbone.body.``, where
``AQTimmBackbone`` keeps it inside the meta-architecture, so ``MODEL.WEIGHTS`` can point at the output
(``{"model": ..., "__author__": "timm:<name>", "matching_heuristics": False}``). The classifier head and
other keys the features model lacks are dropped (and listed). All feature levels are kept, so the
output suits any ``MODEL.TIMM_BACKBONE.OUT_INDICES``. Nothing is downloaded: the architecture is built
on the meta device only to derive the key names. ``MODEL.WEIGHTS timm://pvt_v2_b5`` does the same
conversion on the fly; this tool is the manual route.
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import List, Optional

import aqformer_d2  # noqa: F401  (detectron2 compatibility before detectron2 imports)
from aqformer_d2.checkpoint import (
    load_state_dict_file,
    local_weight_file,
    save_weights_checkpoint,
    timm_model_state,
)

logger = logging.getLogger("convert_timm_backbone")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="timm checkpoint (.pth/.pt/.bin/.safetensors) or timm://<model>")
    parser.add_argument("output", help="detectron2 checkpoint to write (.pth)")
    parser.add_argument("--model", required=True, help="timm architecture name, e.g. pvt_v2_b5")
    parser.add_argument(
        "--prefix", default="backbone.body.",
        help="prefix of the features model inside the detectron2 model (default: 'backbone.body.')",
    )
    parser.add_argument("--in-chans", type=int, default=3, help="input channels of the architecture (default 3)")
    parser.add_argument(
        "--allow-missing", action="store_true",
        help="write the file even if some backbone keys are missing from the input (they are listed)",
    )
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> str:
    """Run the conversion; returns the output path."""
    args = parse_args(argv)
    source = local_weight_file(args.input)
    model_state = timm_model_state(
        load_state_dict_file(source), args.model, prefix=args.prefix, in_chans=args.in_chans,
        require_all=not args.allow_missing, source=source,
    )
    save_weights_checkpoint(args.output, model_state, f"timm:{args.model}")
    logger.info("Wrote %d tensors to %s", len(model_state), args.output)
    return args.output


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
