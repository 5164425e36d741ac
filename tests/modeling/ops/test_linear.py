"""aqformer_d2/modeling/ops/linear_op.py: both backends of ``linear`` compute F.linear's product, the oneDNN one is
taken where the rules say, and the plain one when oneDNN's private op is missing or computes something else.

Round-off bound used throughout: tests/modeling/ops/bounds.py (two summation orders of a K-term dot product
plus bias differ by at most 2 gamma_{K+1} (sum |x w| + |b|)). A wrong product (a missing bias, a transposed
weight, a dropped row block) is off by O(|y|), orders of magnitude above the bound, which the tests check
as well.
"""
import logging

import pytest
import torch
from torch.nn import functional as F

from aqformer_d2.modeling.ops import linear_op as linear_mod
from aqformer_d2.modeling.ops import linear, linear_backend
from aqformer_d2.modeling.ops.linear_op import MIN_ROWS, MIN_WEIGHT_ELEMENTS, onednn_linear_available
from aqformer_d2.modeling.ops.reference import linear_reference
from tests.modeling.ops.bounds import dot_bound


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
    assert linear_backend(x, w) == "onednn"
    assert linear_backend(x.double(), w.double()) == "plain"  # oneDNN's f32 kernels only
    assert linear_backend(x[:, : MIN_ROWS // 5 - 1], w) == "plain"  # 5 * 101 = 505 rows < MIN_ROWS
    assert linear_backend(x[:, : MIN_ROWS // 5 + 1], w) == "onednn"
    # few rows but a large weight (VGGish's FC layers): the weight read dominates, oneDNN pays
    assert linear_backend(torch.randn(5, 1024), torch.randn(MIN_WEIGHT_ELEMENTS // 1024, 1024)) == "onednn"
    assert linear_backend(torch.randn(5, 1024), torch.randn(MIN_WEIGHT_ELEMENTS // 1024 - 1, 1024)) == "plain"
    with torch.backends.mkldnn.flags(enabled=False):
        assert linear_backend(x, w) == "plain"


def test_not_under_torch_compile(monkeypatch):
    """Inductor refuses the oneDNN op with a weight that is not a graph constant, and lowers linear layers
    itself; bench/compile_speed.py compiles the pixel decoder through this path."""
    x, w, _ = _inputs()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert linear_backend(x, w) == "plain"


def test_large_input_runs_on_onednn_small_on_blas():
    x, w, b = _inputs()
    with torch.no_grad():
        assert "mkldnn::_linear_pointwise" in _ops(lambda: linear(x, w, b))
        assert "mkldnn::_linear_pointwise" not in _ops(lambda: linear(x[:, :10], w, b))
        with torch.backends.mkldnn.flags(enabled=False):
            assert "mkldnn::_linear_pointwise" not in _ops(lambda: linear(x, w, b))


@pytest.mark.parametrize("activation", ["none", "relu", "gelu"])
def test_forward_matches_f_linear_within_roundoff(activation):
    """Both backends give the same result: the oneDNN product (ReLU fused; GELU applied afterwards) against
    F.linear and the activation. GELU is 1-Lipschitz up to 1.13 (max |GELU'|), so the bound grows by 13%."""
    x, w, b = _inputs()
    assert linear_backend(x, w) == "onednn"
    with torch.no_grad():
        fast = linear(x, w, b, activation=activation)  # [5, 1029, 288]
        ref = linear_reference(x, w, b, activation=activation)
    bound = dot_bound(x.reshape(-1, 256), w.t(), 256, b).view_as(ref) * (1.13 if activation == "gelu" else 1.0)
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


def test_bad_activation_is_refused():
    x, w, b = _inputs(rows=10)
    with pytest.raises(ValueError, match="activation must be one of"):
        linear(x, w, b, activation="swish")


@pytest.fixture
def fresh_probe():
    """Forget the once-per-process probe of oneDNN's op before and after a test that changes the op."""
    onednn_linear_available.cache_clear()
    yield
    onednn_linear_available.cache_clear()


def test_plain_backend_when_the_op_is_missing(monkeypatch, fresh_probe, caplog):
    """A build without oneDNN's linear op (torch.ops.mkldnn without ``_linear_pointwise``): every call takes
    the plain backend, which is F.linear exactly, and no private op runs."""
    monkeypatch.setattr(torch.ops, "mkldnn", object())  # a namespace without the op
    x, w, b = _inputs()
    with caplog.at_level(logging.INFO, logger=linear_mod.__name__):
        assert not onednn_linear_available()
    assert "not in this PyTorch build" in caplog.text
    assert linear_backend(x, w) == "plain"
    with torch.no_grad():
        assert torch.equal(linear(x, w, b, activation="relu"), F.relu(F.linear(x, w, b)))
    xg = x[:, :205].clone().requires_grad_(True)
    linear(xg, w, b).sum().backward()  # the backward needs no private op either
    assert xg.grad is not None


@pytest.mark.parametrize("behaviour", ["wrong_result", "raises"])
def test_plain_backend_when_the_op_misbehaves(monkeypatch, fresh_probe, caplog, behaviour):
    """An op that computes something else (here: the bias left out) or refuses the call is caught by the
    probe, logged as a warning, and the plain backend runs."""
    real = torch.ops.mkldnn._linear_pointwise

    def wrong(x, weight, bias, activation, scalars, algorithm):
        if behaviour == "raises":
            raise RuntimeError("unsupported argument")
        return real(x, weight, None, activation, scalars, algorithm)

    class Namespace:
        _linear_pointwise = staticmethod(wrong)

    monkeypatch.setattr(torch.ops, "mkldnn", Namespace())
    x, w, b = _inputs()
    with caplog.at_level(logging.WARNING, logger=linear_mod.__name__):
        assert not onednn_linear_available()
    assert ("disagrees" if behaviour == "wrong_result" else "failed on a probe") in caplog.text
    assert linear_backend(x, w) == "plain"
    with torch.no_grad():
        assert torch.equal(linear(x, w, b), F.linear(x, w, b))


def test_probe_accepts_the_real_op(fresh_probe):
    """Teeth of the two tests above: with the real op the same probe passes (the bound is not too tight)."""
    assert onednn_linear_available()

