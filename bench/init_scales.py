"""Magnitudes at initialisation behind two unprinted choices (docs/paper_choices.md):

1. ABTI's temperature of eq. (9) (``MODEL.AQ_PIXEL_DECODER.ABTI_LOGIT_SCALE``): the size of the term ABTI
   adds, |F̂ - F| / |F| (Frobenius norms over the clip), the spread of the eq. (9) logits and how peaked
   S_pq is, at each of the 4 positions, with "sqrt_dim" and with "none" (eq. 9 as printed). Both models are
   built from the same seed, so their weights are equal. ABTI is evaluated on the features it received
   while the package's segmenter (``aqformer_d2.inference.build_segmenter``) ran the clip, once with the
   model's own audio features (a randomly initialised VGGish) and once with unit-variance Gaussian audio
   features, a stand-in for the larger embeddings of a trained encoder. (The R50 config has no layer that
   behaves differently in training: FrozenBN, no dropout, so these are the features of a training step.)
2. The AVSim reduction (``MODEL.AQFORMER.SIM_REDUCTION``): L_sim beside the sum of the mask losses of all
   decoder layers, with "sum" (eq. 7 as printed) and "mean", for both ``MASK_EMBED`` readings of eq. (6),
   from the model's training-mode forward (the losses the trainer's step sums; no inference interface
   gives them).

    .venv/bin/python -m bench.init_scales            # R50 S4 config, one clip of 5 random frames, 224x224

Random weights (no pretrained files), one clip of :func:`bench.common.random_clip` (seed 0: random uint8
frames, random log-mel audio, one random disc mask per frame), on the CPU. Prints markdown tables and writes
docs/measurements/init_scales.json.
"""
import argparse
import json
import os
from typing import Dict, List

import torch

from aqformer_d2.modeling.ops import linear
from bench.common import ROOT, bench_cfg, capture_inputs, plain_copy, random_clip

DEFAULT_CONFIG = "configs/avsbench/s4/aqformer_R50.yaml"
DEFAULT_OUT = "docs/measurements/init_scales.json"


def build(config: str, opts: List[str], seed: int, frames: int, size: int):
    """The config and its segmenter (PyTorch backend, random weights drawn after ``torch.manual_seed(seed)``)."""
    from aqformer_d2.inference import build_segmenter

    cfg = bench_cfg(config, opts, frames=frames, size=size)
    torch.manual_seed(seed)
    return cfg, build_segmenter(cfg)


def capture_abti_inputs(segmenter, clip) -> Dict[str, tuple]:
    """Position -> (F [B*T, C, H, W], A [B, T, C_a]) that ABTI received while the segmenter ran ``clip``."""
    abti = segmenter.model.pixel_decoder.abti
    names = [f"pixel_decoder.abti.{key}" for key in abti]
    captured = capture_inputs(segmenter.model, names, lambda: segmenter(clip["images"], clip["audio"]))
    return {key: plain_copy(captured[f"pixel_decoder.abti.{key}"][0]) for key in abti}


def abti_statistics(module, features: torch.Tensor, audio: torch.Tensor) -> Dict[str, float]:
    """|F_hat - F|_F / |F|_F, the std of the eq. (9) logits (after the temperature) and the mean over (p, q) of
    the largest weight of S_pq (1/HW = uniform, 1 = one-hot)."""
    b, t, _ = audio.shape
    bt, c, h, w = features.shape
    frames = features.flatten(2).transpose(1, 2).reshape(b, t, h * w, c)  # [B, T, HW, C]
    with torch.no_grad():
        f_m = linear(frames, module.w_m)  # f_m(F_q) = F_q W_m^T on every pixel, [B, T, HW, C_b]
        logits = torch.einsum("bpc,bqnc->bpqn", module.f_a(audio), f_m) * module.logit_multiplier
        weights, _ = module.gather(audio, frames)  # [B, T, T, HW]
        update = (module(features, audio) - features).norm() / features.norm()
    return {"relative_update": update.item(), "logit_std": logits.std().item(),
            "max_weight": weights.max(dim=-1).values.mean().item(), "uniform_weight": 1.0 / (h * w)}


def loss_composition(model, clip) -> Dict[str, float]:
    """L_sim and the sum of all mask losses (BCE + Dice, every decoder layer) of one training forward."""
    with torch.no_grad():
        model.train()
        losses = model([clip])
    mask = sum(v.item() for k, v in losses.items() if k.startswith(("loss_bce", "loss_dice")))
    return {"loss_sim": losses["loss_sim"].item(), "mask_losses": mask, "sim_over_mask": losses["loss_sim"].item() / mask}


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    size, frames = 224, 5
    clip = random_clip(frames, size, seed=args.seed, masks=True)

    result: Dict = {"config": args.config_file, "seed": args.seed, "image_size": size, "frames": frames}
    abti, weights = {}, {}
    for scale in ("sqrt_dim", "none"):
        cfg, segmenter = build(args.config_file, ["MODEL.AQ_PIXEL_DECODER.ABTI_LOGIT_SCALE", scale], args.seed,
                               frames, size)
        model = segmenter.model
        weights[scale] = model.state_dict()
        captured = capture_abti_inputs(segmenter, clip)
        g = torch.Generator().manual_seed(args.seed + 1)
        for key, (features, audio) in captured.items():
            module = model.pixel_decoder.abti[key]
            unit_audio = torch.randn(audio.shape, generator=g)  # stand-in for a trained encoder's embedding
            abti[f"{scale}/{key}/model_audio"] = abti_statistics(module, features, audio)
            abti[f"{scale}/{key}/unit_audio"] = abti_statistics(module, features, unit_audio)
        del model, segmenter
    same = all(torch.equal(weights["sqrt_dim"][k], weights["none"][k]) for k in weights["sqrt_dim"])
    if not same:
        raise RuntimeError("the two ABTI models were not built with equal weights")
    del weights
    result["abti"] = abti

    losses = {}
    for embed in ("norm_mlp", "plain"):
        for reduction in ("sum", "mean"):
            _, segmenter = build(args.config_file, ["MODEL.AQ_TRANSFORMER_DECODER.MASK_EMBED", embed,
                                                    "MODEL.AQFORMER.SIM_REDUCTION", reduction], args.seed, frames, size)
            losses[f"{embed}/{reduction}"] = loss_composition(segmenter.model, clip)
            del segmenter
    result["losses"] = losses
    layers = cfg.MODEL.AQ_TRANSFORMER_DECODER.DEC_STAGES * 3
    result["sim_terms_L_T2"] = layers * frames * frames

    print(f"ABTI at initialisation ({args.config_file}, seed {args.seed}): |F_hat - F| / |F|, std of the eq. (9) "
          "logits, mean largest weight of S_pq (uniform = 1/HW)\n")
    print("| position (stride) | audio | temperature | |F_hat - F| / |F| | logit std | max weight | 1/HW |")
    print("|---|---|---|---:|---:|---:|---:|")
    strides = {"1": 32, "2": 16, "3": 8, "4": 4}
    for key in sorted(strides):
        for audio in ("model_audio", "unit_audio"):
            for scale in ("sqrt_dim", "none"):
                row = abti[f"{scale}/{key}/{audio}"]
                print(f"| {key} ({strides[key]}) | {audio} | {scale} | {row['relative_update']:.2e} | "
                      f"{row['logit_std']:.3g} | {row['max_weight']:.3g} | {row['uniform_weight']:.2e} |")
    print(f"\nLosses at initialisation (L x T^2 = {result['sim_terms_L_T2']} terms in L_sim)\n")
    print("| MASK_EMBED / SIM_REDUCTION | L_sim | mask losses (all layers) | L_sim / mask |\n|---|---:|---:|---:|")
    for name, row in losses.items():
        print(f"| {name} | {row['loss_sim']:.3g} | {row['mask_losses']:.4g} | {row['sim_over_mask']:.2e} |")
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
