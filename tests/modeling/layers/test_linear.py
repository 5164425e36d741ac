"""aqformer_d2/modeling/layers/linear.py: ``Linear`` is a drop-in ``nn.Linear`` computed by ``ops.linear``, and
``use_fast_linear`` swaps it into third-party models without touching their parameters.

Round-off bounds: tests/modeling/ops/bounds.py.
"""
import torch
from torch import nn

from aqformer_d2.modeling.layers.linear import Linear, use_fast_linear
from aqformer_d2.modeling.ops import linear_op
from tests.modeling.ops.bounds import dot_bound


def _ops(fn):
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


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
        monkeypatch.setattr(linear_op, "linear_backend", lambda x, w: "plain")
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
