"""Is a trained model's audio encoder alive? Dead ReLU channels and the spread of each activation over
the test clips' audio examples, layer by layer (docs/avss.md, "A seed whose audio encoder died").

    .venv/bin/python -m bench.audio_health --config-file OUT/config.yaml --weights OUT/model_final.pth \
        [--dataset NAME] [--clips 12] [--output health.json] [KEY VALUE ...]
    .venv/bin/python -m bench.audio_health --config-file CONFIG --at-init [--seed N] [KEY VALUE ...]

``--at-init`` reports the encoder as the model is built (the random initialisation of ``MODEL.AUDIO_ENCODER.INIT``
under torch.manual_seed(--seed)) instead of a checkpoint's.

The audio encoder (e.g. VGGish trained from scratch in the tiny configs) runs on the log-mel examples of the
real frames of the first ``--clips`` test clips (padded AVSS frames left out). For every ReLU of the encoder:
the channels that are never positive on any example and position ("dead"), and the spread over examples (the
standard deviation over examples of each activation, averaged over channels and positions). The encoder's
output gets the same spread and its mean magnitude. An output that hardly varies between sounds leaves
everything after it (audio queries, ABTI, eq. 1-2) deaf: compare the spread with that of a model that listens
(no fixed threshold is given: an untrained encoder's output also varies little, by ~1e-3 of its magnitude
on random inputs), and confirm with the swapped-audio control.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List

import torch
from torch import nn

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="the trained checkpoint")
    src.add_argument("--at-init", action="store_true", help="the freshly built model, seeded by --seed")
    p.add_argument("--seed", type=int, default=0, help="with --at-init: torch.manual_seed before building")
    p.add_argument("--dataset", default=None, help="default: the config's first DATASETS.TEST")
    p.add_argument("--clips", type=int, default=12)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output", default=None, help="write the figures as JSON here")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


def spread_over_examples(x: torch.Tensor) -> float:
    """x ``[N, ...]`` (N examples) -> standard deviation over the N examples of each entry, averaged."""
    return float(x.reshape(x.shape[0], -1).std(0).mean())


def dead_channels(x: torch.Tensor) -> int:
    """x ``[N, C, ...]`` after a ReLU -> number of channels that are never positive."""
    per_channel = x.transpose(0, 1).reshape(x.shape[1], -1)  # [C, N * positions]
    return int((per_channel.max(1).values <= 0).sum())


def audio_encoder_health(encoder: nn.Module, examples: torch.Tensor) -> Dict:
    """Run ``encoder`` on ``examples`` ``[N, 1, 96, 64]`` and report each ReLU and the output.

    Returns:
        ``{"layers": [{"name", "channels", "dead", "spread"}], "output_spread", "output_magnitude" (mean
        absolute value), "num_examples"}``.
    """
    layers: List[Dict] = []
    hooks = []
    for name, module in encoder.named_modules():
        if isinstance(module, nn.ReLU):
            def record(_m, _inp, out, name=name):
                layers.append({"name": name, "channels": int(out.shape[1]), "dead": dead_channels(out),
                               "spread": spread_over_examples(out)})
            hooks.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            out = encoder(examples)  # [N, C_a]
    finally:
        for h in hooks:
            h.remove()
    spread = spread_over_examples(out)
    magnitude = float(out.abs().mean())
    return {"layers": layers, "output_spread": spread, "output_magnitude": magnitude,
            "num_examples": int(examples.shape[0])}


def real_frame_examples(cfg, dataset: str, clips: int) -> torch.Tensor:
    """Log-mel examples ``[N, 1, 96, 64]`` of the real frames of the first ``clips`` clips of ``dataset``."""
    from aqformer_d2.data import build_aq_dataset_mapper
    from detectron2.data import DatasetCatalog

    mapper = build_aq_dataset_mapper(cfg, is_train=False)
    out = []
    for record in DatasetCatalog.get(dataset)[:clips]:
        clip = mapper(record)
        audio = clip["audio"].float()  # [T, 1, 96, 64]
        if "frame_valid" in clip:
            audio = audio[clip["frame_valid"]]  # AVSS: padded frames hear zeros by construction
        out.append(audio)
    return torch.cat(out)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from aqformer_d2.checkpoint import AQCheckpointer
    from aqformer_d2.engine import AQFormerTrainer, build_cfg

    cfg = build_cfg(args.config_file, list(args.opts))
    if args.at_init:
        torch.manual_seed(args.seed)
    model = AQFormerTrainer.build_model(cfg)
    if args.weights:
        AQCheckpointer(model).load(args.weights)
    model.eval()
    source = args.weights or f"the initialisation (MODEL.AUDIO_ENCODER.INIT {cfg.MODEL.AUDIO_ENCODER.INIT}, seed {args.seed})"
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    report = audio_encoder_health(model.audio_encoder, real_frame_examples(cfg, dataset, args.clips))
    report.update(command=".venv/bin/python -m bench.audio_health " + " ".join(argv if argv is not None else sys.argv[1:]),
                  weights=source, dataset=dataset)
    lines = [f"audio encoder of {source} on {report['num_examples']} examples of {dataset}",
             "| ReLU | dead channels | spread over examples |", "|---|---:|---:|"]
    lines += [f"| {r['name']} | {r['dead']} / {r['channels']} | {r['spread']:.4f} |" for r in report["layers"]]
    lines.append(f"| output (mean magnitude {report['output_magnitude']:.4f}) | | {report['output_spread']:.3g} |")
    print("\n".join(lines))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
