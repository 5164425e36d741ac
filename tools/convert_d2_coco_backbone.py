#!/usr/bin/env python
"""Take the backbone out of a detectron2-format COCO checkpoint and write it as an AQFormer initialisation.

    python tools/convert_d2_coco_backbone.py model_final_94dc52.pkl weights/r50_coco_mask2former.pth
    python tools/convert_d2_coco_backbone.py model_final_f10217.pkl weights/r50_coco_maskrcnn.pth \\
        --config-file configs/avsbench/s4/aqformer_R50.yaml MODEL.RESNETS.STRIDE_IN_1X1 True

The input is a Mask2Former COCO model (backbone keys ``backbone.res2...``) or a detectron2 FPN model
(``backbone.bottom_up.res2...``), as ``.pkl`` (read with the restricted unpickler), ``.pth`` or
``.safetensors``. The backbone of ``--config-file`` (plus trailing KEY VALUE overrides) is built and filled
strictly from it, so a depth or width mismatch fails here, naming the file; the head keys are skipped
(one summary line). The output ``{"model": {"backbone.<name>": tensor}, "matching_heuristics": False, ...}``
is what ``MODEL.WEIGHTS`` takes; the rest of the model keeps its initialisation. See docs/coco_backbone.md
for the input conventions (channel order, normalisation, STRIDE_IN_1X1) that must match the checkpoint's.
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import List, Optional

import aqformer_d2  # noqa: F401  (detectron2 compatibility before detectron2 imports)
from aqformer_d2.checkpoint import load_coco_backbone, local_weight_file, save_weights_checkpoint
from aqformer_d2.engine import build_cfg
from aqformer_d2.modeling import build_aq_backbone

logger = logging.getLogger("convert_d2_coco_backbone")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "avsbench", "s4", "aqformer_R50.yaml")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="COCO checkpoint (.pkl / .pth / .safetensors), or a mask2former:// / detectron2:// URL")
    parser.add_argument("output", help="checkpoint to write (.pth), for MODEL.WEIGHTS")
    parser.add_argument("--config-file", default=DEFAULT_CONFIG,
                        help="config whose MODEL.BACKBONE is filled (default: configs/avsbench/s4/aqformer_R50.yaml)")
    parser.add_argument("--prefix", default="backbone.",
                        help="attribute path of the backbone inside the model (default: 'backbone.', AQFormer's)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args(argv)


def build_config(config_file: str, opts: List[str]):
    return build_cfg(config_file, list(opts) + ["MODEL.DEVICE", "cpu"])  # imports the config's IMPORTS first


def main(argv: Optional[List[str]] = None) -> str:
    """Run the conversion; returns the output path."""
    args = parse_args(argv)
    cfg = build_config(args.config_file, args.opts)
    backbone = build_aq_backbone(cfg)
    selection, _ = load_coco_backbone(backbone, local_weight_file(args.input))
    checkpoint = save_weights_checkpoint(
        args.output, {args.prefix + k: v.detach().clone().contiguous() for k, v in backbone.state_dict().items()},
        f"convert_d2_coco_backbone: {selection.layout} layout of {os.path.basename(args.input)}",
    )
    r = cfg.MODEL.RESNETS
    logger.info(
        "Wrote %d tensors to %s. Train with the input conventions the checkpoint was trained with; this config has "
        "INPUT.FORMAT %s, MODEL.PIXEL_MEAN %s, MODEL.PIXEL_STD %s, MODEL.RESNETS.STRIDE_IN_1X1 %s, "
        "MODEL.RESNETS.NORM %s (docs/coco_backbone.md).",
        len(checkpoint["model"]), args.output, cfg.INPUT.FORMAT, list(cfg.MODEL.PIXEL_MEAN), list(cfg.MODEL.PIXEL_STD),
        r.STRIDE_IN_1X1, r.NORM,
    )
    return args.output


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
