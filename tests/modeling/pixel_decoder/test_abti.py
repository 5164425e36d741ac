"""ABTI, eq. (9)-(12)."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from aqformer_d2.modeling.pixel_decoder import abti as abti_module
from aqformer_d2.modeling.pixel_decoder.abti import ABTI

B, T, C, CA, CB, H, W = 2, 3, 8, 6, 8, 4, 5
# float64: eq. (10) and (11)-(12) are recomputed below outside the module (another summation order,
# over at most H*W = 20 pixels or C = 8 channels). Two evaluation orders of an n-term sum differ by at
# most 2(n-1)u * sum|terms| (Higham, Accuracy and Stability of Numerical Algorithms, section 4.2): with
# u = 2**-53 = 1.1e-16 that is < 5e-15 * sum|terms| on any CPU and thread count, far below the atol of
# 1e-6 / 1e-5 used here; in float32 (u = 6e-8) the bound, 2.3e-6 * sum|terms|, is not.
DTYPE = torch.float64


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B * T, C, H, W, generator=g, dtype=DTYPE), torch.randn(B, T, CA, generator=g, dtype=DTYPE)


def _module(**kwargs):
    torch.manual_seed(0)
    return ABTI(feature_dim=C, audio_dim=CA, hidden_dim=CB, num_heads=2, **kwargs).to(DTYPE).eval()


def test_gather_weights_are_a_softmax_over_pixels():
    abti = _module()
    feats, audio = _inputs()
    frames = feats.flatten(2).transpose(1, 2).reshape(B, T, H * W, C)
    s, o = abti.gather(audio, frames)
    assert s.shape == (B, T, T, H * W) and o.shape == (B, T, T, CB)
    assert torch.allclose(s.sum(-1), torch.ones(B, T, T, dtype=DTYPE), atol=1e-6)
    assert torch.all(s > 0)
    # Eq. (10) for one (b, p, q) written out directly.
    b, p, q = 1, 2, 0
    assert torch.allclose(o[b, p, q], s[b, p, q] @ abti.f_n(frames[b, q]), atol=1e-6)


def test_output_shape_equals_input_shape():
    abti = _module()
    feats, audio = _inputs()
    assert abti(feats, audio).shape == feats.shape


def test_frame_output_depends_on_other_frames():
    abti = _module()
    feats, audio = _inputs()
    out = abti(feats, audio)
    perturbed = feats.clone()
    perturbed[1] += torch.randn(C, H, W, dtype=DTYPE)  # clip 0, frame 2 (index 1)
    out2 = abti(perturbed, audio)
    assert not torch.allclose(out[0], out2[0], atol=1e-5)  # clip 0, frame 1 changes
    assert torch.equal(out[T:], out2[T:])  # the other clip is untouched


def test_output_depends_on_audio():
    abti = _module()
    feats, audio = _inputs()
    out = abti(feats, audio)
    audio2 = audio.clone()
    audio2[0, 2] += torch.randn(CA, dtype=DTYPE)
    out2 = abti(feats, audio2)
    assert not torch.allclose(out[0], out2[0], atol=1e-5)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="divisible"):
        ABTI(feature_dim=C, audio_dim=CA, hidden_dim=6, num_heads=4)
    abti = _module()
    feats, audio = _inputs()
    with pytest.raises(ValueError, match="B\\*T"):
        abti(feats[:-1], audio)
    with pytest.raises(ValueError, match="audio"):
        abti(feats, audio[..., :-1])


def test_remap_sums_outer_products_over_p():
    """Eq. (11)-(12) written out for one clip and frame: F̂_q = F_q + sum_p S_pq^T f_o(Ô_pq)."""
    abti = _module()
    g = torch.Generator().manual_seed(3)
    frames = torch.randn(B, T, H * W, C, generator=g, dtype=DTYPE)
    s = torch.rand(B, T, T, H * W, generator=g, dtype=DTYPE)
    o_hat = torch.randn(B, T, T, CB, generator=g, dtype=DTYPE)
    out = abti.remap(frames, s, o_hat)
    b, q = 1, 2
    expected = frames[b, q].clone()
    for p in range(T):
        expected += s[b, p, q][:, None] @ abti.f_o(o_hat[b, p, q])[None, :]  # [HW, 1] x [1, C]
    assert torch.allclose(out[b, q], expected, atol=1e-5)


@pytest.mark.parametrize("logit_scale, divisor", [("sqrt_dim", CB ** 0.5), ("none", 1.0)])
def test_eq9_logit_scale(logit_scale, divisor):
    """S_pq = Softmax_HW(f_a(A_p) f_m(F_q)^T / d): d = sqrt(C_b) by default, d = 1 as printed ("none")."""
    abti = _module(logit_scale=logit_scale)
    feats, audio = _inputs()
    frames = feats.flatten(2).transpose(1, 2).reshape(B, T, H * W, C)
    s, _ = abti.gather(audio, frames)
    b, p, q = 1, 0, 2
    logits = F.linear(frames[b, q], abti.w_m) @ abti.f_a(audio[b, p])  # [HW], f_m(F_q) f_a(A_p)^T written out
    assert torch.allclose(s[b, p, q], (logits / divisor).softmax(dim=0), atol=1e-6)


def test_eq9_without_temperature_is_sharper():
    """Same weights, the printed form's softmax over HW is further from uniform (lower entropy)."""
    feats, audio = _inputs()
    frames = feats.flatten(2).transpose(1, 2).reshape(B, T, H * W, C)
    entropies = {}
    for scale in ("sqrt_dim", "none"):
        s, _ = _module(logit_scale=scale).gather(audio, frames)
        entropies[scale] = -(s * s.log()).sum(-1).mean().item()
    assert entropies["none"] < entropies["sqrt_dim"]


def test_rejects_unknown_logit_scale():
    with pytest.raises(ValueError, match="logit_scale"):
        ABTI(feature_dim=C, audio_dim=CA, hidden_dim=CB, num_heads=2, logit_scale="sqrt")


def _literal_forward(abti, feats, audio):
    """Eq. (9)-(12) as printed, nothing re-associated: f_m and f_n on every pixel, S_pq f_n(F_q), and
    sum_p S_pq^T f_o(Ô_pq) (the module computes (f_a(A_p) W_m) F_q^T and (S_pq F_q) W_n^T + b_n)."""
    b, t, _ = audio.shape
    bt, c, h, w = feats.shape
    frames = feats.flatten(2).transpose(1, 2).reshape(b, t, h * w, c)  # [B, T, HW, C]
    logits = torch.einsum("bpc,bqnc->bpqn", abti.f_a(audio), F.linear(frames, abti.w_m)) * abti.logit_multiplier
    s = logits.softmax(dim=-1)  # [B, T(p), T(q), HW]
    o = torch.einsum("bpqn,bqnc->bpqc", s, abti.f_n(frames))  # [B, T(p), T(q), C_b]
    o_hat = abti.interact(o)
    out = frames + torch.einsum("bpqn,bpqc->bqnc", s, abti.f_o(o_hat))  # [B, T, HW, C]
    return out.reshape(bt, h * w, c).transpose(1, 2).reshape(bt, c, h, w)


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "strided"])
def test_forward_and_gradients_match_the_equations_as_printed(layout):
    """The re-associated eq. (9)-(10) against the literal form, float64: outputs and the gradients of every
    parameter (W_m and f_n act on audio / pooled rows in the module) and of the features agree to round-off. Sums of
    at most H*W*C = 160 terms: Higham's bound 2n u sum|terms| < 1e-12 here. Layouts: NCHW, channels_last,
    and a channels_last batch slice of a larger buffer (what the pixel decoder passes at stride 8)."""
    abti = _module()
    with torch.no_grad():  # non-zero biases (the init zeroes them): b_n must pass through the pooling
        for param in abti.parameters():
            param.copy_(torch.randn(param.shape, dtype=DTYPE, generator=torch.Generator().manual_seed(param.numel())))
    feats, audio = _inputs(seed=4)
    if layout == "nhwc":
        feats = feats.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        big = torch.randn(B * T, C, H + 2, W, dtype=DTYPE).contiguous(memory_format=torch.channels_last)
        big[:, :, :H] = feats
        feats = big[:, :, :H]  # batch stride (H + 2) * W * C
    cot = torch.randn(feats.shape, dtype=DTYPE, generator=torch.Generator().manual_seed(9))
    results = []
    for fn in (abti, lambda f, a: _literal_forward(abti, f, a)):
        x = feats.detach().requires_grad_(True)
        a = audio.clone().requires_grad_(True)
        abti.zero_grad()
        out = fn(x, a)
        out.backward(cot)
        grads = [x.grad, a.grad] + [p.grad for p in abti.parameters()]
        results.append((out.detach(), grads))
    (out, grads), (want, want_grads) = results
    assert (out - want).abs().max().item() < 1e-12
    assert (out - feats).abs().max().item() > 0.1  # teeth: ABTI changes the features
    for name, g, wg in zip(["features", "audio"] + [n for n, _ in abti.named_parameters()], grads, want_grads):
        assert (g - wg).abs().max().item() < 1e-12 * max(1.0, wg.abs().max().item()), name
        assert wg.abs().max().item() > 1e-6, name  # every parameter receives a gradient


def test_w_m_is_stored_as_f_m_weight_like_a_bias_free_linear_layer(monkeypatch):
    """W_m is kept as a bare weight under the state-dict key ``f_m.weight``: the keys, their order, the
    parameter order and the seeded initial values are those of an ABTI whose f_m is
    ``nn.Linear(C, C_b, bias=False)``, so checkpoints with that layout load and a seed gives the same
    model. f_m has no forward: nothing applies it to the pixels."""
    torch.manual_seed(7)
    abti = ABTI(feature_dim=C, audio_dim=CA, hidden_dim=CB, num_heads=2)
    monkeypatch.setattr(abti_module, "LinearMapWeight", lambda out, inp: nn.Linear(inp, out, bias=False))
    torch.manual_seed(7)
    as_linear = ABTI(feature_dim=C, audio_dim=CA, hidden_dim=CB, num_heads=2)
    assert isinstance(as_linear.f_m, nn.Linear) and not isinstance(abti.f_m, nn.Linear)
    assert list(abti.state_dict()) == list(as_linear.state_dict())
    assert "f_m.weight" in abti.state_dict() and "f_m.bias" not in abti.state_dict()
    assert [n for n, _ in abti.named_parameters()] == [n for n, _ in as_linear.named_parameters()]
    assert all(torch.equal(a, b) for a, b in zip(abti.state_dict().values(), as_linear.state_dict().values()))
    assert abti.w_m is abti.f_m.weight and abti.w_m.shape == (CB, C)
    # a checkpoint of the nn.Linear layout loads strictly, and the module then computes the same output
    torch.manual_seed(8)
    other = ABTI(feature_dim=C, audio_dim=CA, hidden_dim=CB, num_heads=2)
    other.load_state_dict(as_linear.state_dict(), strict=True)
    feats, audio = (t.float() for t in _inputs())
    with torch.no_grad():
        assert torch.equal(other.eval()(feats, audio), abti.eval()(feats, audio))
    # f_m only holds W_m under its checkpoint name; eq. (9) uses w_m directly, so f_m has no forward of its own
    with pytest.raises(NotImplementedError):
        abti.f_m(torch.zeros(1, C))

