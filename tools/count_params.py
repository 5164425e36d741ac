#!/usr/bin/env python
"""Count the parameters of AQFormer models, per part and overall.

    .venv/bin/python tools/count_params.py --config-file configs/avsbench/s4/aqformer_R50.yaml \
        --config-file configs/avsbench/s4/aqformer_PVTv2b5.yaml --config-file configs/synthavs/Base-Tiny.yaml

For every config the model is built on the CPU (random initialisation, nothing is loaded) and a
markdown table lists total and trainable parameters of the backbone, the audio encoder, the pixel
decoder (eq. 1-2, deformable encoder, ABTI), the transformer decoder and the whole model.
``--opts KEY VALUE ...`` overrides config keys of every config (e.g. ablations).
"""
import argparse
import sys
from typing import Dict, List, Tuple

import aqformer_d2  # noqa: F401  (registers the components; must precede detectron2.modeling)
from aqformer_d2.engine import build_cfg
from aqformer_d2.modeling import build_aq_model
from torch import nn

PARTS = (
    ("backbone", "backbone"),
    ("audio encoder", "audio_encoder"),
    ("pixel decoder", "pixel_decoder"),
    ("transformer decoder", "predictor"),
)


def count(module: nn.Module) -> Tuple[int, int]:
    """(total, trainable) parameter counts of ``module``."""
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def count_model(model: nn.Module) -> Dict[str, Tuple[int, int]]:
    """Part name -> (total, trainable), plus "overall" for the whole model."""
    rows = {label: count(getattr(model, attr)) for label, attr in PARTS}
    rows["overall"] = count(model)
    return rows


def build(config_file: str, opts: List[str]) -> nn.Module:
    cfg = build_cfg(config_file, list(opts) + ["MODEL.DEVICE", "cpu"])  # imports the config's IMPORTS first
    return build_aq_model(cfg)


def _fmt(n: int) -> str:
    return f"{n:,} ({n / 1e6:.2f} M)"


def format_table(config_file: str, rows: Dict[str, Tuple[int, int]]) -> str:
    lines = [f"### {config_file}", "", "| part | total params | trainable params |", "|---|---:|---:|"]
    for label, (total, trainable) in rows.items():
        name = f"**{label}**" if label == "overall" else label
        lines.append(f"| {name} | {_fmt(total)} | {_fmt(trainable)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", action="append", required=True, metavar="FILE",
                        help="config to count (repeat for several)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help="config overrides applied to every config")
    args = parser.parse_args(argv)
    for config_file in args.config_file:
        rows = count_model(build(config_file, args.opts))
        parts_total = sum(rows[label][0] for label, _ in PARTS)
        print(format_table(config_file, rows))
        if parts_total != rows["overall"][0]:
            print(f"\n(parameters outside the four parts: {rows['overall'][0] - parts_total:,})")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
