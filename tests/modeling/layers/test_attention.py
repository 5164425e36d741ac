"""aqformer_d2/modeling/layers/attention.py: the same attention as nn.MultiheadAttention's own forward."""
import pytest
import torch
from torch import nn

from aqformer_d2.modeling.layers.attention import multihead_attention


@pytest.mark.parametrize("lk", [7, 600])  # 600 keys x 2 clips: the key/value projections take the oneDNN path
def test_matches_nn_multihead_attention(lk):
    """float64 (the module's own path and ours differ only in the order of additions: < 1e-12 here) and
    float32 (bound: softmax-weighted sums of O(1) values after K = 32-term products; 1e-5 is ~100 ulps)."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    q, k, v = torch.randn(2, 5, 32), torch.randn(2, lk, 32), torch.randn(2, lk, 32)
    with torch.no_grad():
        want32 = mha(q, k, v, need_weights=False)[0]
        got32 = multihead_attention(mha, q, k, v)
        mha64 = mha.double()
        want64 = mha64(q.double(), k.double(), v.double(), need_weights=False)[0]
        got64 = multihead_attention(mha64, q.double(), k.double(), v.double())
    assert got64.shape == (2, 5, 32)
    assert (got64 - want64).abs().max().item() < 1e-12
    assert (got32 - want32).abs().max().item() < 1e-5
    assert want64.abs().max().item() > 1e-2  # teeth: outputs far above the tolerances


def test_gradients_match_in_training_without_dropout():
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(16, 2, batch_first=True).double().train()
    q = torch.randn(3, 4, 16, dtype=torch.float64, requires_grad=True)
    k = torch.randn(3, 9, 16, dtype=torch.float64, requires_grad=True)
    grads = []
    for fn in (lambda: mha(q, k, k, need_weights=False)[0], lambda: multihead_attention(mha, q, k, k)):
        mha.zero_grad()
        out = fn()
        gq, gk = torch.autograd.grad(out.pow(2).sum(), (q, k), retain_graph=True)
        out.pow(2).sum().backward()
        grads.append(torch.cat([gq.flatten(), gk.flatten()] + [p.grad.flatten() for p in mha.parameters()]))
    assert (grads[0] - grads[1]).abs().max().item() < 1e-12


def test_unsupported_module_is_refused():
    with pytest.raises(ValueError, match="only batch-first modules"):
        multihead_attention(nn.MultiheadAttention(8, 2), torch.randn(1, 2, 8), torch.randn(1, 3, 8), torch.randn(1, 3, 8))
    with pytest.raises(ValueError, match="only batch-first modules"):
        multihead_attention(nn.MultiheadAttention(8, 2, batch_first=True, add_bias_kv=True),
                            torch.randn(1, 2, 8), torch.randn(1, 3, 8), torch.randn(1, 3, 8))
