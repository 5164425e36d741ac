"""Shared helpers of the whole-model tests: configs, synthetic clips and the gradient check.

Gradient exceptions (parameters that legitimately do NOT get a usable gradient), all verified by
``check_gradients``:

* ``exact`` -- the gradient is exactly 0 by construction:
  - AV_ATTN_MODE "printed": eq. (1) takes a softmax over ONE audio key, so every weight is 1 and the
    softmax backward, ``y * (g - sum(g * y))`` with y = 1, is exactly 0: f_q and f_k of the three
    ``pixel_decoder.av_attn.*`` modules never learn (every step).
  - ``pixel_decoder.level_embed`` on the FIRST step only: it is added to the positional embedding
    that enters MSDeformAttn only through the query, i.e. through ``sampling_offsets`` and
    ``attention_weights`` whose weight matrices are zero-initialised (Deformable DETR). Once an
    optimiser step has made those weights non-zero, level_embed receives a gradient.

Two parameters that used to be here were removed from the model instead: ABTI's f_m bias (a constant
over the HW pixels of the softmax of eq. 9, shift-invariant) and a decoder level embedding added to the
keys only (each layer attends to one scale, so it shifted all logits equally); the decoder now adds its
level embedding to the memory, where it learns.
"""
from typing import Dict, List, Optional

import torch
from detectron2.config import get_cfg
from torch import nn

from aqformer_d2.config import add_aqformer_config

TINY_CONFIG = "configs/synthavs/Base-Tiny.yaml"
R50_CONFIG = "configs/avsbench/s4/aqformer_R50.yaml"
PVT_CONFIG = "configs/avsbench/s4/aqformer_PVTv2b5.yaml"

# A gradient whose largest entry is at most this fraction of the largest gradient entry in the whole
# model counts as "round-off only". Measured on the tiny config and its ablations: analytic zeros are
# <= 7e-9 of it, the smallest real gradients (sigmoid-mode f_q.bias, ABTI f_a) >= 2e-6 of it.
ANALYTIC_ZERO_RTOL = 1e-7


def make_cfg(config_file: str, overrides: Optional[List] = None):
    """A CPU config from ``config_file`` (path relative to the repository root) plus ``overrides``."""
    cfg = get_cfg()
    add_aqformer_config(cfg)
    cfg.merge_from_file(config_file)
    if overrides:
        cfg.merge_from_list(list(overrides))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def make_clip(
    generator: torch.Generator,
    frames: int = 5,
    height: int = 64,
    width: int = 64,
    valid: Optional[List[bool]] = None,
    with_masks: bool = True,
) -> Dict:
    """A clip dict as produced by AVSClipMapper: random frames, audio and blob-shaped {0, 1} masks."""
    clip = {
        "images": torch.randint(0, 256, (frames, 3, height, width), generator=generator, dtype=torch.uint8),
        "audio": torch.randn(frames, 1, 96, 64, generator=generator),
        "height": height,
        "width": width,
        "video_id": "synthetic",
    }
    if with_masks:
        ys = torch.arange(height, dtype=torch.float32)[:, None]
        xs = torch.arange(width, dtype=torch.float32)[None, :]
        masks = []
        for _ in range(frames):
            cy, cx = torch.rand(2, generator=generator) * torch.tensor([height, width])
            r = 0.15 * min(height, width) + 0.2 * min(height, width) * torch.rand(1, generator=generator)
            masks.append((((ys - cy) ** 2 + (xs - cx) ** 2) <= r ** 2).to(torch.uint8))  # [H, W]
        clip["masks"] = torch.stack(masks)  # [T, H, W]
        clip["mask_valid"] = torch.tensor(valid if valid is not None else [True] * frames, dtype=torch.bool)
    return clip


def gradient_exceptions(model: nn.Module, cfg, first_step: bool = True) -> Dict[str, str]:
    """Parameter name -> "exact" | "analytic" for the parameters that do not learn (module docstring)."""
    names = {n for n, _ in model.named_parameters()}
    out: Dict[str, str] = {}
    if cfg.MODEL.AQ_PIXEL_DECODER.AV_ATTN_MODE == "printed":
        for i in range(3):
            for f in ("f_q", "f_k"):
                for kind in ("weight", "bias"):
                    out[f"pixel_decoder.av_attn.{i}.{f}.{kind}"] = "exact"
    if first_step:
        out["pixel_decoder.level_embed"] = "exact"
    missing = sorted(set(out) - names)
    assert not missing, f"expected exception parameters are not in the model: {missing}"
    return out


def check_gradients(model: nn.Module, exceptions: Dict[str, str]) -> None:
    """After a backward pass: every trainable parameter has a gradient; the non-exceptions have a
    gradient that is clearly non-zero, the exceptions one that is exactly / numerically zero."""
    grads = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        assert p.grad is not None, f"{name} got no gradient (not part of the graph)"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        grads[name] = p.grad.abs().max().item()
    scale = max(grads.values())
    assert scale > 0
    wrong = []
    for name, g in grads.items():
        kind = exceptions.get(name)
        if kind == "exact":
            if g != 0.0:
                wrong.append(f"{name}: expected exactly 0, got max|grad| {g:.3e}")
        elif kind == "analytic":
            if g > ANALYTIC_ZERO_RTOL * scale:
                wrong.append(f"{name}: expected round-off only, got max|grad| {g:.3e} (scale {scale:.3e})")
        elif g <= ANALYTIC_ZERO_RTOL * scale:
            wrong.append(f"{name}: expected a gradient, got max|grad| {g:.3e} (scale {scale:.3e})")
    assert not wrong, "unexpected gradients:\n" + "\n".join(wrong)
