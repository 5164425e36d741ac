#!/usr/bin/env python
"""Convert torchvggish's released weights into a checkpoint of the full AQFormer model.

    python tools/convert_vggish.py vggish-10086976.pth -o vggish_aqformer.pth
    python tools/convert_vggish.py vggish-10086976.pth --pca vggish_pca_params-970ea276.pth -o vggish_aqformer.pth
    python tools/convert_vggish.py torchvggish://vggish --pca torchvggish://vggish_pca -o vggish_aqformer.pth

Inputs may be local files or ``torchvggish://`` URLs (fetched into the verified cache). The output is
``{"model": {"audio_encoder.<key>": tensor}, "__author__": "torchvggish", "matching_heuristics": False}``
(:func:`aqformer_d2.modeling.audio_encoder.convert_torchvggish_state_dict`, which checks the layout strictly,
then :func:`aqformer_d2.checkpoint.save_weights_checkpoint`): detectron2's checkpointer loads it as
MODEL.WEIGHTS (every other module keeps its initialisation). PCA buffers are written as
``audio_encoder.pproc.pca_matrix`` / ``pca_means``; they only load into a model whose VGGish has PCA
enabled (MODEL.AUDIO_ENCODER.PCA_WEIGHTS). Without a model-level checkpoint, MODEL.AUDIO_ENCODER.WEIGHTS
takes the torchvggish file (or ``torchvggish://vggish``) directly.
"""
import argparse
import logging
import sys
from typing import List, Optional

import aqformer_d2  # noqa: F401  (detectron2 import set-up; registers components)
from aqformer_d2.checkpoint import save_weights_checkpoint
from aqformer_d2.modeling.audio_encoder import convert_torchvggish_state_dict, load_torch_file

logger = logging.getLogger("aqformer_d2.tools.convert_vggish")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("vggish", help="torchvggish state dict (vggish-10086976.pth or torchvggish://vggish)")
    parser.add_argument(
        "--pca", default="",
        help="torchvggish PCA parameters (vggish_pca_params-970ea276.pth or torchvggish://vggish_pca)",
    )
    parser.add_argument("-o", "--output", required=True, help="checkpoint to write (.pth)")
    parser.add_argument("--prefix", default="audio_encoder.", help="module path of the audio encoder in the model")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    state = load_torch_file(args.vggish, "VGGish weights")
    pca = load_torch_file(args.pca, "VGGish PCA parameters") if args.pca else None
    model = convert_torchvggish_state_dict(state, pca_params=pca, prefix=args.prefix, source=args.vggish)
    save_weights_checkpoint(args.output, model, "torchvggish")
    num_pca = 2 if pca is not None else 0
    num_params = sum(v.numel() for v in model.values())
    logger.info(
        "wrote %s: %d keys under %r (%d VGGish tensors from %s, %d PCA tensors), %d values",
        args.output, len(model), args.prefix, len(model) - num_pca, args.vggish, num_pca, num_params,
    )
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
