"""``nn.Linear`` whose large float32 CPU products run on oneDNN's matrix-multiply kernels.

Why. PyTorch's CPU ``F.linear`` / ``addmm`` call the BLAS it was built with (MKL in the official
wheels). On the AMD EPYC machines this project runs on, that path reaches about half of the rate oneDNN's
``brg_matmul:avx512_core`` kernels reach on the same products (bench/README.md, "Linear layers on
oneDNN": 5145 x 256 -> 1024, 2 threads, 12.6 ms vs 5.7 ms; 1 thread, 26 ms vs 11 ms), and the deformable
encoder's linear layers are 44% of the pixel decoder's time. oneDNN's inner product is reachable from
Python through ``torch.ops.mkldnn._linear_pointwise`` (the op PyTorch's own Inductor emits for CPU
linear layers); it has no autograd formula, so :class:`_OneDNNLinearFunction` supplies one.

When. :func:`linear` uses oneDNN only where it pays and where it is defined: CPU tensors, float32 input
and weight, at least :data:`MIN_ROWS` rows or a weight of at least :data:`MIN_WEIGHT_ELEMENTS` entries
(below both the call overhead wins; measured in bench/README.md), oneDNN built in and enabled (``torch.backends.mkldnn.enabled``; switch it off with
``torch.backends.mkldnn.flags(enabled=False)`` to get PyTorch's own path back), not while exporting to
ONNX (the graph keeps a plain MatMul/Gemm), tracing or compiling with ``torch.compile`` (Inductor lowers
linear layers itself; it refuses this op with a non-constant weight). Everything else runs ``F.linear``
unchanged. Both paths compute the same product; they differ only in the order of the float32 additions (tests/modeling/layers/
test_linear.py bounds the difference).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "Linear", "linear", "onednn_linear_available", "uses_onednn", "use_fast_linear", "MIN_ROWS",
    "MIN_WEIGHT_ELEMENTS",
]

#: Fewest rows (product of the input's leading dimensions) for which the oneDNN path is taken ...
MIN_ROWS = 512
#: ... unless the weight has at least this many entries: then reading the weight dominates and oneDNN wins
#: at any row count (5 rows x 12288 -> 4096, VGGish's first FC layer: 18.4 ms vs 6.1 ms at 2 threads).
MIN_WEIGHT_ELEMENTS = 2 ** 20


def onednn_linear_available() -> bool:
    """True when this PyTorch build has oneDNN and exposes its inner-product op."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


_AVAILABLE = onednn_linear_available()


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`linear` runs ``x`` [..., C_in] times ``weight`` [C_out, C_in] on oneDNN."""
    return (
        _AVAILABLE
        and torch.backends.mkldnn.enabled
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and weight.device.type == "cpu"
        and x.dim() >= 2
        and (x.numel() // max(x.shape[-1], 1) >= MIN_ROWS or weight.numel() >= MIN_WEIGHT_ELEMENTS)
        and not torch.onnx.is_in_onnx_export()
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()  # torch.compile lowers linear layers itself
    )


_ACTIVATIONS = ("none", "relu")


def _inner_product(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                   activation: str = "none") -> torch.Tensor:
    """act(x [R, K] (row-major) times weight [O, K] (row-major) plus bias [O]) -> [R, O], on oneDNN.

    ``activation`` "relu" is applied by oneDNN as a post-op on the output tile it has just written, so
    no second pass over the [R, O] output is made.
    """
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, activation, [], "")


class _OneDNNLinearFunction(torch.autograd.Function):
    """y = act(x W^T + b) with forward and both backward products on oneDNN; act is identity or ReLU.

    Shapes: x [R, K], weight [O, K], bias [O] or None -> y [R, O].
    Backward (dy taken through the ReLU first, dy * (y > 0), when act is ReLU): dx = dy W ([R, O] x [O, K]:
    the inner product with weight W^T [K, O], on oneDNN); dW = dy^T x ([O, R] x [R, K], ``torch.mm``);
    db = sum_r dy.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, activation):
        out = _inner_product(x, weight, bias, activation)  # [R, O]
        ctx.relu = activation == "relu"
        ctx.save_for_backward(x, weight, out if ctx.relu else None)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, out = ctx.saved_tensors
        if ctx.relu:
            # [R, O]: dy where y > 0, else 0; the kernel of F.relu's own backward (one pass; a masked_fill with
            # a (y <= 0) mask was 26x slower on a [13440, 128] FFN activation, bench/README.md, issue 11 third session)
            grad_out = torch.ops.aten.threshold_backward(grad_out, out, 0.0)
        grad_out = grad_out.contiguous()  # [R, O]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _inner_product(grad_out, weight.t().contiguous(), None)  # [R, K]
        if ctx.needs_input_grad[1]:
            # dy^T x contracts over the R rows, so both operands would have to be transposed into
            # row-major copies for oneDNN's inner product; the BLAS reads them transposed in place.
            grad_w = torch.mm(grad_out.t(), x)  # [O, K]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(0)  # [O]
        return grad_x, grad_w, grad_b, None


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           activation: str = "none") -> torch.Tensor:
    """``F.linear(x, weight, bias)``, then ReLU if ``activation`` is "relu": x [..., K], weight [O, K],
    bias [O] -> [..., O].

    Runs on oneDNN when :func:`uses_onednn` says so (the ReLU fused into the product), else ``F.linear``
    (and ``F.relu``).
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"linear: activation must be one of {_ACTIVATIONS}, got {activation!r}")
    if not uses_onednn(x, weight):
        out = F.linear(x, weight, bias)
        return F.relu(out) if activation == "relu" else out
    lead = x.shape[:-1]
    x2d = x.reshape(-1, x.shape[-1]).contiguous()  # [R, K] (a copy only if x's rows are not contiguous)
    weight = weight.contiguous()
    if torch.is_grad_enabled() and (x2d.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        out = _OneDNNLinearFunction.apply(x2d, weight, bias, activation)  # [R, O]
    else:
        out = _inner_product(x2d, weight, bias, activation)  # [R, O]
    return out.view(*lead, weight.shape[0])  # [..., O]


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, state-dict keys and initialisation) computed by :func:`linear`."""

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

