"""Unit tests of the decoder layers (eq. 3-6): cross-attention scope, residual/LN form, eq. (6)."""
import pytest
import torch

from aqformer_d2.modeling.transformer_decoder.layers import (
    AQDecoderLayer,
    CrossAttentionLayer,
    SelfAttentionLayer,
    predict_masks,
)

B, T, C, HW = 2, 4, 8, 6
# float64 throughout: the comparisons below evaluate one expression along two code paths (batched vs
# per-frame attention, einsum vs a written-out sum). Each is a chain of sums of at most HW * T = 24
# terms; two evaluation orders of an n-term sum differ by at most 2(n-1)u * sum|terms| (Higham,
# Accuracy and Stability of Numerical Algorithms, section 4.2), with u = 2**-53 = 1.1e-16 in float64:
# relative differences ~1e-14 on any CPU and thread count, far below the float64 default tolerances of
# assert_close (rtol 1e-7, atol 1e-7). In float32 (u = 6e-8) the same bound, 3e-6 * sum|terms|, would
# not fit under assert_close's float32 atol of 1e-5 for every draw.
DTYPE = torch.float64


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    queries = torch.randn(B, T, C, generator=g, dtype=DTYPE)
    memory = torch.randn(B * T, HW, C, generator=g, dtype=DTYPE)
    pos = torch.randn(1, HW, C, generator=g, dtype=DTYPE)
    return queries, memory, pos


def _perturb_frame(memory, clip, frame):
    """Return a copy of memory [B*T, HW, C] with frame `frame` of clip `clip` changed."""
    changed = memory.clone()
    changed[clip * T + frame] += 3.0 * torch.randn(HW, C, generator=torch.Generator().manual_seed(7), dtype=DTYPE)
    return changed


@torch.no_grad()
def test_all_scope_query_attends_to_other_frames():
    torch.manual_seed(0)
    layer = CrossAttentionLayer(C, 2, scope="all").to(DTYPE).eval()
    queries, memory, pos = _inputs()
    base = layer(queries, memory, pos)
    out = layer(queries, _perturb_frame(memory, clip=0, frame=2), pos)
    # frame 3 (index 2) of clip 0 changed: every query of clip 0 sees it, including query 1 (index 0)
    for t in range(T):
        assert not torch.allclose(out[0, t], base[0, t]), t
    # the other clip is untouched: attention never crosses clips
    torch.testing.assert_close(out[1], base[1], rtol=0, atol=0)


@torch.no_grad()
def test_own_scope_query_attends_to_its_frame_only():
    torch.manual_seed(0)
    layer = CrossAttentionLayer(C, 2, scope="own").to(DTYPE).eval()
    queries, memory, pos = _inputs()
    base = layer(queries, memory, pos)
    out = layer(queries, _perturb_frame(memory, clip=0, frame=2), pos)
    assert not torch.allclose(out[0, 2], base[0, 2])
    for t in (0, 1, 3):
        torch.testing.assert_close(out[0, t], base[0, t], rtol=0, atol=0)
    torch.testing.assert_close(out[1], base[1], rtol=0, atol=0)


@torch.no_grad()
def test_own_scope_equals_all_scope_on_single_frame_clips():
    """Audio Query†: query t with scope "own" == scope "all" applied to a one-frame clip made of frame t."""
    torch.manual_seed(0)
    own = CrossAttentionLayer(C, 2, scope="own").to(DTYPE).eval()
    full = CrossAttentionLayer(C, 2, scope="all").to(DTYPE).eval()
    full.load_state_dict(own.state_dict())
    queries, memory, pos = _inputs()
    single = full(queries.reshape(B * T, 1, C), memory, pos).reshape(B, T, C)
    torch.testing.assert_close(own(queries, memory, pos), single)


@torch.no_grad()
def test_cross_attention_is_branch_layernorm_residual():
    """Eq. (3): output - input = LN(attention branch), so it has zero mean and unit variance per query."""
    torch.manual_seed(0)
    layer = CrossAttentionLayer(C, 2).to(DTYPE).eval()
    queries, memory, pos = _inputs()
    branch = layer(queries, memory, pos) - queries
    torch.testing.assert_close(branch.mean(-1), torch.zeros(B, T, dtype=DTYPE), atol=1e-5, rtol=0)
    # LN eps (1e-5) makes the variance sigma^2 / (sigma^2 + eps), not 1
    torch.testing.assert_close(branch.var(-1, unbiased=False), torch.ones(B, T, dtype=DTYPE), atol=1e-2, rtol=0)


@torch.no_grad()
def test_self_attention_mixes_queries_within_a_clip_only():
    torch.manual_seed(0)
    layer = SelfAttentionLayer(C, 2).to(DTYPE).eval()
    x = torch.randn(B, T, C, dtype=DTYPE)
    base = layer(x)
    x2 = x.clone()
    x2[0, 3] += 1.0
    out = layer(x2)
    assert not torch.allclose(out[0, 0], base[0, 0])
    torch.testing.assert_close(out[1], base[1], rtol=0, atol=0)


@torch.no_grad()
def test_decoder_layer_output_shape():
    layer = AQDecoderLayer(C, 2, 16).to(DTYPE).eval()
    queries, memory, pos = _inputs()
    assert layer(queries, memory, pos).shape == (B, T, C)


def test_predict_masks_is_plain_per_frame_product():
    mask_features = torch.randn(B * T, C, 5, 3, dtype=DTYPE)
    queries = torch.randn(B, T, C, dtype=DTYPE)
    logits = predict_masks(mask_features, queries)
    assert logits.shape == (B, T, 5, 3)
    b, t, y, x = 1, 2, 4, 1
    expected = (mask_features[b * T + t, :, y, x] * queries[b, t]).sum()
    torch.testing.assert_close(logits[b, t, y, x], expected)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="scope"):
        CrossAttentionLayer(C, 2, scope="frames")
    with pytest.raises(ValueError, match="multiple of nhead"):
        SelfAttentionLayer(C, 3)
    queries, memory, pos = _inputs()
    with pytest.raises(ValueError, match="memory must be"):
        CrossAttentionLayer(C, 2)(queries, memory[:-1], pos)
    with pytest.raises(ValueError, match="mask_features"):
        predict_masks(torch.randn(B * T, C + 1, 4, 4), queries)
