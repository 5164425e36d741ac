"""Float32 round-off bounds of dot products, shared by the tests of the linear operator and its users.

Any order of summing the K products of a dot product plus a bias gives |fl(y) - y| <= gamma_{K+1} *
(sum_k |x_k w_k| + |b|) with gamma_n = n u / (1 - n u), u = 2^-24 (Higham, Accuracy and Stability of
Numerical Algorithms, eq. 3.5; a fused multiply-add only removes roundings). Two implementations that
differ only in that order (blocking, vector lanes, threads) differ by at most twice that, on any x86-64
and thread count.
"""
import torch

U = 2.0 ** -24


def gamma(n: int) -> float:
    return n * U / (1 - n * U)


def dot_bound(a: torch.Tensor, b: torch.Tensor, k: int, bias=None) -> torch.Tensor:
    """2 gamma_{k+1} (|a| |b| + |bias|): a [R, K] @ b [K, O] -> [R, O] (float64)."""
    mag = a.double().abs() @ b.double().abs()
    if bias is not None:
        mag = mag + bias.double().abs()
    return 2 * gamma(k + 1) * mag
