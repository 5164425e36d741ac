"""``nn.Linear`` computed by :func:`aqformer_d2.modeling.ops.linear`, and the swap that puts it into
third-party models (timm backbones)."""
from __future__ import annotations

import torch
from torch import nn

from ..ops import linear

__all__ = ["Linear", "use_fast_linear"]


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, state-dict keys and initialisation): y = x W^T + b by :func:`ops.linear
    <aqformer_d2.modeling.ops.linear>`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., in_features] -> [..., out_features]."""
        return linear(x, self.weight, self.bias)


def use_fast_linear(module: nn.Module) -> int:
    """Replace every ``nn.Linear`` inside ``module`` (exactly that class, not subclasses) by a :class:`Linear`
    that holds the SAME parameter objects, so weights, state-dict keys, optimizer references and frozen flags
    are unchanged. Used for third-party backbones (timm). Returns the number of layers replaced."""
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear:
                continue
            fast = Linear(child.in_features, child.out_features, bias=child.bias is not None,
                          device="meta")  # no allocation; the parameters are taken over below
            fast.weight = child.weight
            fast.bias = child.bias
            fast.train(child.training)
            setattr(parent, name, fast)
            replaced += 1
    return replaced
