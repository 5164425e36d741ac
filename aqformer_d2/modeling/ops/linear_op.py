"""The linear product y = act(x W^T + b): :func:`linear`, on oneDNN's inner product where that is faster, else
``F.linear``.

Why. PyTorch's CPU ``F.linear`` / ``addmm`` call the BLAS it was built with (MKL in the official wheels). On
the AMD EPYC machines this project runs on, that path reaches about half of the rate oneDNN's
``brg_matmul:avx512_core`` kernels reach on the same products (bench/README.md, "Linear layers on oneDNN":
5145 x 256 -> 1024, 2 threads, 12.6 ms vs 5.7 ms; 1 thread, 26 ms vs 11 ms), and the deformable encoder's
linear layers are 44% of the pixel decoder's time. oneDNN's inner product is reachable from Python through
``torch.ops.mkldnn._linear_pointwise`` (the op PyTorch's own Inductor emits for CPU linear layers), a
private op: it has no autograd formula (:class:`_OneDNNLinearFunction` supplies one), and whether it exists
and what it computes is checked once per process (:func:`onednn_linear_available`).

Backends (:func:`linear_backend` names the one a call takes):

- ``"onednn"``: CPU tensors, float32 input and weight, at least :data:`MIN_ROWS` rows or a weight of at
  least :data:`MIN_WEIGHT_ELEMENTS` entries (below both the call overhead wins; bench/README.md), oneDNN
  enabled (``torch.backends.mkldnn.enabled``; ``torch.backends.mkldnn.flags(enabled=False)`` switches it
  off), not exporting to ONNX (the graph keeps a plain MatMul/Gemm), tracing or compiling with
  ``torch.compile`` (Inductor lowers linear layers itself and refuses this op with a non-constant weight),
  and :func:`onednn_linear_available`. A ReLU is fused into the product (a oneDNN post-op on the output
  tile just written); other activations are applied afterwards.
- ``"plain"``: everything else: :func:`~.reference.linear_reference` (``F.linear``, then the activation).

Both compute the same product; they differ only in the order of the float32 additions
(tests/modeling/ops/test_linear.py bounds the difference).
"""
from __future__ import annotations

import functools
import logging
from typing import Callable, Dict, Optional

import torch
from torch.nn import functional as F

from .reference import ACTIVATIONS, check_activation, linear_reference

__all__ = ["MIN_ROWS", "MIN_WEIGHT_ELEMENTS", "linear", "linear_backend", "onednn_linear_available"]

logger = logging.getLogger(__name__)

#: Fewest rows (product of the input's leading dimensions) for which the oneDNN path is taken ...
MIN_ROWS = 512
#: ... unless the weight has at least this many entries: then reading the weight dominates and oneDNN wins
#: at any row count (5 rows x 12288 -> 4096, VGGish's first FC layer: 18.4 ms vs 6.1 ms at 2 threads).
MIN_WEIGHT_ELEMENTS = 2 ** 20
#: activations oneDNN applies as a post-op of the product
_FUSED_ACTIVATIONS = ("none", "relu")


def _onednn_op() -> Optional[Callable]:
    """``torch.ops.mkldnn._linear_pointwise``, or None where this build lacks oneDNN or the op."""
    if not torch.backends.mkldnn.is_available():
        return None
    return getattr(torch.ops.mkldnn, "_linear_pointwise", None)


@functools.lru_cache(maxsize=None)
def onednn_linear_available() -> bool:
    """True when this PyTorch build has oneDNN's inner-product op and it computes ``F.linear``'s product,
    without and with the fused ReLU, on a small probe (7 x 16 -> 5, float32). Checked once per process; a
    build whose op is missing, refuses the call or computes something else gets the plain backend, with a
    log line saying why.

    Probe bound: each entry is a 17-term sum (16 products and the bias); each computation is within
    gamma_17 * sum|terms| of the exact value (gamma_n = n u / (1 - n u), u = 2^-24, any summation order,
    with or without FMA), so the two differ by at most 2 gamma_17 * sum|terms|.
    """
    op = _onednn_op()
    if op is None:
        logger.info("oneDNN's linear op is not in this PyTorch build: linear layers use F.linear")
        return False
    g = torch.Generator().manual_seed(0)
    x, weight, bias = torch.randn(7, 16, generator=g), torch.randn(5, 16, generator=g), torch.randn(5, generator=g)
    want = F.linear(x, weight, bias)  # [7, 5]
    n, u = 17, 2.0 ** -24
    bound = 2 * (n * u / (1 - n * u)) * (x.abs() @ weight.abs().t() + bias.abs())  # [7, 5]
    for activation in _FUSED_ACTIVATIONS:
        try:
            got = op(x, weight, bias, activation, [], "")
        except (RuntimeError, TypeError) as e:  # the private op changed its signature or refuses the call
            logger.warning("oneDNN's linear op failed on a probe (%s): linear layers use F.linear", e)
            return False
        expected = ACTIVATIONS[activation](want)
        if got.shape != expected.shape or not bool(((got - expected).abs() <= bound).all()):
            logger.warning("oneDNN's linear op (activation %r) disagrees with F.linear on a probe: linear layers "
                           "use F.linear", activation)
            return False
    return True


def linear_backend(x: torch.Tensor, weight: torch.Tensor) -> str:
    """"onednn" or "plain": the backend :func:`linear` uses for ``x`` [..., K] times ``weight`` [O, K]."""
    fast = (
        torch.backends.mkldnn.enabled
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and weight.device.type == "cpu"
        and x.dim() >= 2
        and (x.numel() // max(x.shape[-1], 1) >= MIN_ROWS or weight.numel() >= MIN_WEIGHT_ELEMENTS)
        and not torch.onnx.is_in_onnx_export()
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()  # torch.compile lowers linear layers itself
        and onednn_linear_available()  # last: the probe never runs inside a trace
    )
    return "onednn" if fast else "plain"


def _inner_product(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                   activation: str = "none") -> torch.Tensor:
    """act(x [R, K] (row-major) times weight [O, K] (row-major) plus bias [O]) -> [R, O], on oneDNN;
    ``activation`` one of :data:`_FUSED_ACTIVATIONS`."""
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
            # [R, O]: dy where y > 0, else 0; the kernel of F.relu's own backward, one pass (a masked_fill
            # with a (y <= 0) mask was 26x slower on a [13440, 128] FFN activation, bench/README.md)
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


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                   activation: str) -> torch.Tensor:
    """The "onednn" backend: x [..., K] -> [..., O], the ReLU fused, other activations applied afterwards."""
    fused = activation if activation in _FUSED_ACTIVATIONS else "none"
    lead = x.shape[:-1]
    x2d = x.reshape(-1, x.shape[-1]).contiguous()  # [R, K] (a copy only if x's rows are not contiguous)
    weight = weight.contiguous()
    if torch.is_grad_enabled() and (x2d.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        out = _OneDNNLinearFunction.apply(x2d, weight, bias, fused)  # [R, O]
    else:
        out = _inner_product(x2d, weight, bias, fused)  # [R, O]
    out = out.view(*lead, weight.shape[0])  # [..., O]
    return out if fused == activation else ACTIVATIONS[activation](out)


_BACKENDS: Dict[str, Callable[..., torch.Tensor]] = {"onednn": _onednn_linear, "plain": linear_reference}


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           activation: str = "none") -> torch.Tensor:
    """act(x W^T + b): ``F.linear(x, weight, bias)`` followed by ``activation`` ("none", "relu" or "gelu").

    Args:
        x: [..., K]; weight: [O, K]; bias: [O] or None.

    Returns:
        [..., O], computed by the backend :func:`linear_backend` names.
    """
    check_activation(activation)
    return _BACKENDS[linear_backend(x, weight)](x, weight, bias, activation)
