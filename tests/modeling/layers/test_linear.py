"""aqformer_d2/modeling/layers/linear.py: the oneDNN linear path computes nn.Linear's product.

Round-off bound used throughout (float32, unit roundoff u = 2^-24): any order of summing the K products
of a dot product plus a bias gives |fl(y) - y| <= gamma_{K+1} * (sum_k |x_k w_k| + |b|) with
gamma_n = n u / (1 - n u) (Higham, Accuracy and Stability of Numerical Algorithms, eq. 3.5; a fused
multiply-add only removes roundings). MKL and oneDNN differ only in that order (blocking, vector lanes,
threads), so two results differ by at most twice that. This holds on any x86-64 and thread count. A
wrong product (a missing bias, a transposed weight, a dropped row block) is off by O(|y|), orders of
magnitude above the bound, which the tests check as well.
"""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from aqformer_d2.modeling.layers import linear as linear_mod
from aqformer_d2.modeling.layers.linear import (
    MIN_ROWS,
    MIN_WEIGHT_ELEMENTS,
    Linear,
    linear,
    onednn_linear_available,
    use_fast_linear,
    uses_onednn,
)

U = 2.0 ** -24


def gamma(n: int) -> float:
    return n * U / (1 - n * U)


def dot_bound(a: torch.Tensor, b: torch.Tensor, k: int, bias=None) -> torch.Tensor:
    """2 gamma_{k+1} (|a| |b| + |bias|): a [R, K] @ b [K, O] -> [R, O] (float64)."""
    mag = a.double().abs() @ b.double().abs()
    if bias is not None:
        mag = mag + bias.double().abs()
    return 2 * gamma(k + 1) * mag


def _inputs(rows=1029, k=256, out=288, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, rows, k, generator=g).requires_grad_(grad)  # [5, rows, K]
    w = (torch.randn(out, k, generator=g) / k ** 0.5).requires_grad_(grad)  # [O, K]
    b = torch.randn(out, generator=g).requires_grad_(grad)  # [O]
    return x, w, b


def _ops(fn):
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


def test_this_machine_has_the_onednn_path():
    """The official CPU wheels this project installs have oneDNN and its inner-product op; if a build
    lacks them the fast path silently never runs, so say so here."""
    assert onednn_linear_available()


def test_dispatch_rules():
    x, w, _ = _inputs()
    assert uses_onednn(x, w)
    assert not uses_onednn(x.double(), w.double())  # oneDNN's f32 kernels only
    assert not uses_onednn(x[:, : MIN_ROWS // 5 - 1], w)  # 5 * 101 = 505 rows < MIN_ROWS
    assert uses_onednn(x[:, : MIN_ROWS // 5 + 1], w)
    # few rows but a large weight (VGGish's FC layers): the weight read dominates, oneDNN pays
    assert uses_onednn(torch.randn(5, 1024), torch.randn(MIN_WEIGHT_ELEMENTS // 1024, 1024))
    assert not uses_onednn(torch.randn(5, 1024), torch.randn(MIN_WEIGHT_ELEMENTS // 1024 - 1, 1024))
    with torch.backends.mkldnn.flags(enabled=False):
        assert not uses_onednn(x, w)


def test_not_under_torch_compile(monkeypatch):
    """Inductor refuses the oneDNN op with a weight that is not a graph constant, and lowers linear layers
    itself; bench/compile_speed.py compiles the pixel decoder through this path."""
    x, w, _ = _inputs()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not uses_onednn(x, w)


def test_large_input_runs_on_onednn_small_on_blas():
    x, w, b = _inputs()
    with torch.no_grad():
        assert "mkldnn::_linear_pointwise" in _ops(lambda: linear(x, w, b))
        assert "mkldnn::_linear_pointwise" not in _ops(lambda: linear(x[:, :10], w, b))
        with torch.backends.mkldnn.flags(enabled=False):
            assert "mkldnn::_linear_pointwise" not in _ops(lambda: linear(x, w, b))


@pytest.mark.parametrize("activation", ["none", "relu"])
def test_forward_matches_f_linear_within_roundoff(activation):
    x, w, b = _inputs()
    with torch.no_grad():
        fast = linear(x, w, b, activation=activation)  # [5, 1029, 288]
        ref = F.linear(x, w, b)
        if activation == "relu":
            ref = F.relu(ref)
    bound = dot_bound(x.reshape(-1, 256), w.t(), 256, b).view_as(ref)
    assert fast.shape == ref.shape
    assert ((fast.double() - ref.double()).abs() <= bound).all()
    # teeth: the bound is far below the size of the output, so a wrong product cannot pass
    assert bound.max() < 1e-3 * ref.abs().max()
    with torch.no_grad():
        assert ((linear(x, w, None, activation=activation).double() - ref.double()).abs() > bound).any()


@pytest.mark.parametrize("activation", ["none", "relu"])
def test_gradients_match_f_linear_within_roundoff(activation):
    x, w, b = _inputs(rows=205, grad=True)  # 1025 rows
    g = torch.randn(5, 205, 288, generator=torch.Generator().manual_seed(3))  # [5, 205, O]
    if activation == "relu":
        # Where the pre-activation is within round-off of 0 the two ReLUs may legitimately disagree:
        # no gradient flows from those outputs (a few of the 295k here).
        with torch.no_grad():
            pre = F.linear(x, w, b)
            bound = dot_bound(x.reshape(-1, 256), w.t(), 256, b).view_as(pre)
        g = g.masked_fill(pre.abs().double() <= bound, 0.0)

    def grads(fn):
        out = fn(x, w, b)
        return (out, *torch.autograd.grad(out, (x, w, b), g))

    def reference(x, w, b):
        y = F.linear(x, w, b)
        return F.relu(y) if activation == "relu" else y

    out, dx, dw, db = grads(lambda x, w, b: linear(x, w, b, activation=activation))
    r_out, r_dx, r_dw, r_db = grads(reference)
    gm = g if activation == "none" else g * (r_out > 0)  # [5, 205, 288] the gradient at the pre-activation
    x2, gm2 = x.detach().reshape(-1, 256), gm.reshape(-1, 288)  # [R, K], [R, O]
    assert ((dx.double() - r_dx.double()).abs() <= dot_bound(gm2, w.detach(), 288).view_as(dx)).all()
    assert ((dw.double() - r_dw.double()).abs() <= dot_bound(gm2.t(), x2, x2.shape[0])).all()
    assert ((db.double() - r_db.double()).abs() <= dot_bound(gm2.t(), torch.ones(x2.shape[0], 1), x2.shape[0]).view(-1)).all()
    assert (dx - r_dx).abs().max() < 1e-3 * r_dx.abs().max()  # teeth: the gradients are not all ~0
    assert r_dw.abs().max() > 1.0 and r_db.abs().max() > 1.0


def test_no_grad_for_frozen_weight():
    x, w, b = _inputs(rows=205)
    x.requires_grad_(True)
    out = linear(x, w, b)
    (dx,) = torch.autograd.grad(out.sum(), (x,))
    assert dx.shape == x.shape and w.grad is None


def test_module_is_a_drop_in_nn_linear():
    torch.manual_seed(0)
    ref = nn.Linear(64, 32)
    mod = Linear(64, 32)
    assert isinstance(mod, nn.Linear)
    assert list(mod.state_dict()) == list(ref.state_dict()) == ["weight", "bias"]
    mod.load_state_dict(ref.state_dict())
    x = torch.randn(3, 400, 64)
    with torch.no_grad():
        bound = dot_bound(x.reshape(-1, 64), ref.weight.t(), 64, ref.bias).view(3, 400, 32)
        assert ((mod(x).double() - ref(x).double()).abs() <= bound).all()


def test_bad_activation_is_refused():
    x, w, b = _inputs(rows=10)
    with pytest.raises(ValueError, match="activation must be one of"):
        linear(x, w, b, activation="gelu")


def test_tiny_model_output_same_with_and_without_onednn(monkeypatch):
    """The whole tiny AQFormer (random init, float32, a fixed clip): sound probabilities with the oneDNN
    linear layers vs with F.linear everywhere agree to 1e-5, and the oneDNN path did run.

    Why 1e-5 holds on any machine: each product differs by at most 2 gamma_{K+1} (~3e-5 relative to
    sum |x w| for K = 256; ~1e-6 typical, the errors being random-signed); the layers after it are
    LayerNorm-ed with weights ~ 1/sqrt(C), which do not amplify relative error by more than a small
    factor, and d prob / d logit <= 1/4. Measured on an AVX-512 machine (AMD EPYC, 2 threads): 0, i.e.
    the two libraries summed the tiny model's products in the same order.
    """
    from detectron2.modeling import build_model

    from tests.modeling.meta_arch.helpers import TINY_CONFIG, make_cfg, make_clip

    torch.manual_seed(0)
    model = build_model(make_cfg(TINY_CONFIG)).eval()
    clip = make_clip(torch.Generator().manual_seed(2), frames=5, height=96, width=96, with_masks=False)
    with torch.no_grad():
        assert "mkldnn::_linear_pointwise" in _ops(lambda: model([clip]))
        fast = model([clip])[0]["sound_probs"]
        monkeypatch.setattr(linear_mod, "uses_onednn", lambda x, w: False)
        assert "mkldnn::_linear_pointwise" not in _ops(lambda: model([clip]))
        reference = model([clip])[0]["sound_probs"]
    gap = (fast - reference).abs().max().item()
    assert gap <= 1e-5, f"oneDNN vs F.linear: max |delta prob| = {gap:.3g}"


def test_use_fast_linear_takes_over_the_same_parameters():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Sequential(nn.Linear(32, 16, bias=False)),
                        nn.MultiheadAttention(16, 2))  # out_proj is a subclass of nn.Linear: left alone
    params = dict(net.named_parameters())
    keys = list(net.state_dict())
    x = torch.randn(600, 64)
    with torch.no_grad():
        before = net[2](net[1](net[0](x)))
    assert use_fast_linear(net) == 2
    assert type(net[0]) is Linear and type(net[2][0]) is Linear and type(net[3].out_proj) is not Linear
    assert all(p is params[n] for n, p in net.named_parameters())  # the same Parameter objects
    assert list(net.state_dict()) == keys and net[2][0].bias is None
    with torch.no_grad():
        after = net[2](net[1](net[0](x)))  # 600 rows: the oneDNN path
    assert (after - before).abs().max().item() < 1e-4 * before.abs().max().item()
    assert use_fast_linear(net) == 0  # idempotent
