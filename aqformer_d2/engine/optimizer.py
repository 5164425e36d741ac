"""Optimizer and learning-rate schedule of the paper's protocol (AdamW, poly schedule with warm-up)."""
from typing import Any, Dict, List

import torch
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler
from torch import nn

from detectron2.solver import LRMultiplier, WarmupParamScheduler
from detectron2.solver.build import maybe_add_gradient_clipping

__all__ = ["build_param_groups", "build_optimizer", "build_poly_lr_scheduler"]

_NORM_TYPES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.InstanceNorm1d,
    nn.InstanceNorm2d, nn.LayerNorm, nn.LocalResponseNorm,
)
_OPTIMIZERS = {"ADAMW": torch.optim.AdamW, "SGD": torch.optim.SGD}


def build_param_groups(model: nn.Module, *, base_lr: float, weight_decay: float, weight_decay_norm: float,
                       weight_decay_embed: float, backbone_multiplier: float) -> List[Dict[str, Any]]:
    """One parameter group per trainable parameter: backbone parameters get ``base_lr * backbone_multiplier``;
    normalisation parameters get ``weight_decay_norm``; embeddings (nn.Embedding, and parameters whose
    name ends with "level_embed" or "query_embed") get ``weight_decay_embed``. Frozen parameters are left out."""
    groups, seen = [], set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or param in seen:
                continue
            seen.add(param)
            full = f"{module_name}.{name}" if module_name else name
            lr = base_lr * (backbone_multiplier if full.startswith("backbone.") else 1.0)
            wd = weight_decay
            if isinstance(module, _NORM_TYPES) or "norm" in type(module).__name__.lower():
                wd = weight_decay_norm
            elif isinstance(module, nn.Embedding) or name.endswith(("level_embed", "query_embed")):
                wd = weight_decay_embed
            groups.append({"params": [param], "lr": lr, "weight_decay": wd, "name": full})
    return groups


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """cfg.SOLVER.OPTIMIZER ("ADAMW" as the paper, or "SGD") over :func:`build_param_groups`, with
    detectron2's gradient clipping (cfg.SOLVER.CLIP_GRADIENTS)."""
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name not in _OPTIMIZERS:
        raise ValueError(f"SOLVER.OPTIMIZER must be one of {sorted(_OPTIMIZERS)}, got {cfg.SOLVER.OPTIMIZER!r}")
    groups = build_param_groups(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        weight_decay_embed=cfg.SOLVER.WEIGHT_DECAY_EMBED,
        backbone_multiplier=cfg.SOLVER.BACKBONE_MULTIPLIER,
    )
    for g in groups:
        g.pop("name")
    opt_cls = maybe_add_gradient_clipping(cfg, _OPTIMIZERS[name])
    if name == "SGD":
        return opt_cls(groups, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM, nesterov=cfg.SOLVER.NESTEROV)
    return opt_cls(groups, lr=cfg.SOLVER.BASE_LR)


def build_poly_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> LRMultiplier:
    """lr(it) = base_lr * warmup(it) * (1 - it / MAX_ITER) ** POLY_LR_POWER (the paper's poly schedule)."""
    max_iter = cfg.SOLVER.MAX_ITER
    sched = PolynomialDecayParamScheduler(base_value=1.0, power=cfg.SOLVER.POLY_LR_POWER)
    warmup_length = min(cfg.SOLVER.WARMUP_ITERS / max_iter, 1.0)
    sched = WarmupParamScheduler(sched, cfg.SOLVER.WARMUP_FACTOR, warmup_length, cfg.SOLVER.WARMUP_METHOD)
    return LRMultiplier(optimizer, multiplier=sched, max_iter=max_iter)
