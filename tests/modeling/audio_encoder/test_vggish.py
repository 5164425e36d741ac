"""VGGish audio encoder: torchvggish key layout, strict loading, forward order, PCA, freezing, registry."""
from collections import OrderedDict

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from torch import nn
from torch.nn import functional as F

from aqformer_d2 import add_aqformer_config
from aqformer_d2.audio.logmel import waveform_to_examples
from aqformer_d2.modeling.audio_encoder import AUDIO_ENCODER_REGISTRY, VGGish, build_audio_encoder

# torchvggish's released vggish-10086976.pth, key by key (written out independently of the module).
RELEASED_VGGISH_SHAPES = OrderedDict(
    [
        ("features.0.weight", (64, 1, 3, 3)),
        ("features.0.bias", (64,)),
        ("features.3.weight", (128, 64, 3, 3)),
        ("features.3.bias", (128,)),
        ("features.6.weight", (256, 128, 3, 3)),
        ("features.6.bias", (256,)),
        ("features.8.weight", (256, 256, 3, 3)),
        ("features.8.bias", (256,)),
        ("features.11.weight", (512, 256, 3, 3)),
        ("features.11.bias", (512,)),
        ("features.13.weight", (512, 512, 3, 3)),
        ("features.13.bias", (512,)),
        ("embeddings.0.weight", (4096, 12288)),
        ("embeddings.0.bias", (4096,)),
        ("embeddings.2.weight", (4096, 4096)),
        ("embeddings.2.bias", (4096,)),
        ("embeddings.4.weight", (128, 4096)),
        ("embeddings.4.bias", (128,)),
    ]
)

# The same layout with tiny widths: conv 2, 4, 4x2, 8x2; FC 16, 16; out 8.
TINY = dict(conv_channels=[2, 4, 4, 8], fc_dims=[16, 16], out_dim=8)
TINY_SHAPES = OrderedDict(
    [
        ("features.0.weight", (2, 1, 3, 3)),
        ("features.0.bias", (2,)),
        ("features.3.weight", (4, 2, 3, 3)),
        ("features.3.bias", (4,)),
        ("features.6.weight", (4, 4, 3, 3)),
        ("features.6.bias", (4,)),
        ("features.8.weight", (4, 4, 3, 3)),
        ("features.8.bias", (4,)),
        ("features.11.weight", (8, 4, 3, 3)),
        ("features.11.bias", (8,)),
        ("features.13.weight", (8, 8, 3, 3)),
        ("features.13.bias", (8,)),
        ("embeddings.0.weight", (16, 8 * 6 * 4)),
        ("embeddings.0.bias", (16,)),
        ("embeddings.2.weight", (16, 16)),
        ("embeddings.2.bias", (16,)),
        ("embeddings.4.weight", (8, 16)),
        ("embeddings.4.bias", (8,)),
    ]
)


def tiny_state_dict(seed=0):
    g = torch.Generator().manual_seed(seed)
    return OrderedDict((k, 0.3 * torch.randn(s, generator=g)) for k, s in TINY_SHAPES.items())


def reference_forward(sd, x):
    """torchvggish's forward written with functional ops: VGG stack, transpose(1,3), transpose(1,2), FCs."""
    for i in (0, 3):
        x = F.max_pool2d(F.relu(F.conv2d(x, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"], padding=1)), 2)
    for pair in ((6, 8), (11, 13)):
        for i in pair:
            x = F.relu(F.conv2d(x, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"], padding=1))
        x = F.max_pool2d(x, 2)
    x = torch.transpose(x, 1, 3)
    x = torch.transpose(x, 1, 2).contiguous()
    x = x.view(x.size(0), -1)
    for i in (0, 2, 4):
        x = F.relu(F.linear(x, sd[f"embeddings.{i}.weight"], sd[f"embeddings.{i}.bias"]))
    return x


def test_default_layout_is_torchvggish_release():
    with torch.device("meta"):
        model = VGGish()
    shapes = OrderedDict((k, tuple(v.shape)) for k, v in model.state_dict().items())
    assert shapes == RELEASED_VGGISH_SHAPES
    assert model.out_dim == 128


def test_strict_load_values_and_forward_match_torchvggish(tmp_path):
    sd = tiny_state_dict()
    path = tmp_path / "tiny_vggish.pth"
    torch.save(sd, path)
    model = VGGish(**TINY, weights=str(path))
    loaded = model.state_dict()
    assert list(loaded) == list(TINY_SHAPES)
    for k, v in sd.items():
        assert torch.equal(loaded[k], v), k
    # The forward is compared in float64: the module and reference_forward may evaluate the convolutions
    # and the flatten + linear layers in different summation orders (at most 3 x 3 x 8 = 72 terms per
    # conv output, 8 x 6 x 4 = 192 per output of the first linear layer). Two orders of an n-term sum
    # differ by at most 2(n-1)u * sum|terms| (Higham, Accuracy and Stability of Numerical Algorithms,
    # section 4.2); with u = 2**-53 = 1.1e-16 that is 4.2e-14 * sum|terms| per layer, ~1e-13 relative
    # through the 9 layers on any CPU and thread count, far below the rtol 1e-5 / atol 1e-6 asserted
    # (in float32, u = 6e-8, the first linear layer alone may reach 2.3e-5 * sum|terms|).
    model64 = model.double()
    x = torch.randn(3, 1, 96, 64, dtype=torch.float64)
    out = model64(x)
    assert out.shape == (3, 8)
    sd64 = OrderedDict((k, v.double()) for k, v in sd.items())
    torch.testing.assert_close(out, reference_forward(sd64, x), rtol=1e-5, atol=1e-6)
    assert out.abs().sum() > 0


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda sd: sd.pop("embeddings.2.bias"), r"missing keys \['embeddings.2.bias'\]"),
        (lambda sd: sd.__setitem__("features.1.weight", torch.zeros(1)), r"unexpected keys \['features.1.weight'\]"),
        (lambda sd: sd.__setitem__("embeddings.4.weight", torch.zeros(9, 16)), r"embeddings.4.weight: file \[9, 16\]"),
    ],
)
def test_strict_load_errors_name_file_and_keys(tmp_path, edit, pattern):
    sd = tiny_state_dict()
    edit(sd)
    path = tmp_path / "bad_vggish.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError, match="bad_vggish.pth") as info:
        VGGish(**TINY, weights=str(path))
    assert info.match(pattern)


def test_missing_weights_file():
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        VGGish(**TINY, weights="/nonexistent/nowhere.pth")


def test_pca_postprocessing_matches_torchvggish_formula(tmp_path):
    sd = tiny_state_dict(seed=1)
    torch.save(sd, tmp_path / "w.pth")
    rng = np.random.default_rng(0)
    eig = rng.standard_normal((8, 8))
    means = rng.standard_normal(8)  # stored as [D], as in the released file
    torch.save({"pca_eigen_vectors": eig, "pca_means": means}, tmp_path / "pca.pth")  # numpy arrays
    model = VGGish(**TINY, weights=str(tmp_path / "w.pth"), pca_weights=str(tmp_path / "pca.pth"))
    x = torch.randn(4, 1, 96, 64)
    emb = reference_forward(sd, x).double().numpy()  # [4, 8]
    pca = (eig @ (emb.T - means[:, None])).T
    expected = np.round((np.clip(pca, -2.0, 2.0) + 2.0) * (255.0 / 4.0))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (4, 8)
    assert np.abs(out.double().numpy() - expected).max() <= 1.0  # float32 vs float64 rounding ties
    assert np.mean(out.double().numpy() == expected) > 0.9
    assert len(torch.unique(out)) > 4  # not everything clipped to 0 / 255
    assert out.min() >= 0 and out.max() <= 255 and torch.equal(out, out.round())
    assert set(model.state_dict()) == set(TINY_SHAPES) | {"pproc.pca_matrix", "pproc.pca_means"}

    torch.save({"pca_eigen_vectors": torch.zeros(4, 4), "pca_means": torch.zeros(4, 1)}, tmp_path / "pca4.pth")
    with pytest.raises(ValueError, match="pca4.pth"):
        VGGish(**TINY, pca_weights=str(tmp_path / "pca4.pth"))
    torch.save({"pca_eigen_vectors": torch.zeros(8, 8)}, tmp_path / "pca_nomean.pth")
    with pytest.raises(ValueError, match=r"pca_nomean.pth.*missing keys \['pca_means'\]"):
        VGGish(**TINY, pca_weights=str(tmp_path / "pca_nomean.pth"))


def test_freeze_keeps_eval_and_no_grads():
    model = VGGish(**TINY, freeze=True)
    assert all(not p.requires_grad for p in model.parameters())
    assert not model.training
    parent = nn.Sequential(model, nn.Linear(8, 1))
    parent.train()
    assert parent.training and parent[1].training
    assert not model.training and not any(m.training for m in model.modules())
    parent(torch.randn(2, 1, 96, 64)).sum().backward()
    assert all(p.grad is None for p in model.parameters())
    assert parent[1].weight.grad is not None

    trainable = VGGish(**TINY)
    trainable.eval()
    trainable.train()
    assert trainable.training
    trainable(torch.randn(2, 1, 96, 64)).sum().backward()
    assert trainable.features[0].weight.grad is not None


def test_wrong_input_shape():
    model = VGGish(**TINY)
    for bad in (torch.randn(2, 96, 64), torch.randn(2, 1, 64, 96), torch.randn(2, 3, 96, 64)):
        with pytest.raises(ValueError, match=r"\[N, 1, 96, 64\]"):
            model(bad)


def test_bad_widths():
    with pytest.raises(ValueError, match="conv_channels"):
        VGGish(conv_channels=[4, 8, 8], fc_dims=[16], out_dim=8)
    with pytest.raises(ValueError, match="out_dim"):
        VGGish(conv_channels=[4, 8, 8, 8], fc_dims=[16], out_dim=0)


def test_encode_waveform():
    model = VGGish(**TINY)
    t = np.arange(3 * 16000) / 16000
    wav = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = model.encode_waveform(wav, 16000)
    assert out.shape == (3, 8)
    torch.testing.assert_close(out, model(waveform_to_examples(wav, 16000)))


def test_build_from_cfg():
    assert "VGGish" in AUDIO_ENCODER_REGISTRY
    cfg = get_cfg()
    add_aqformer_config(cfg)
    cfg.MODEL.AUDIO_ENCODER.CONV_CHANNELS = [2, 4, 4, 8]
    cfg.MODEL.AUDIO_ENCODER.FC_DIMS = [16]
    cfg.MODEL.AUDIO_ENCODER.OUT_DIM = 6
    cfg.MODEL.AUDIO_ENCODER.FREEZE = True
    model = build_audio_encoder(cfg)
    assert isinstance(model, VGGish) and model.out_dim == 6 and model.freeze
    assert model(torch.randn(2, 1, 96, 64)).shape == (2, 6)
    assert "embeddings.2.weight" in model.state_dict() and "embeddings.4.weight" not in model.state_dict()
    cfg.MODEL.AUDIO_ENCODER.NAME = "NoSuchEncoder"
    with pytest.raises(KeyError, match="NoSuchEncoder"):
        build_audio_encoder(cfg)


def _relu_spreads(model: nn.Module, x: torch.Tensor):
    """Std over examples of each ReLU's output, averaged over entries, in layer order."""
    spreads = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: spreads.append(float(out.flatten(1).std(0).mean())))
             for m in model.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return spreads


def test_init_he_keeps_signal_pytorch_default_loses_it():
    widths = dict(conv_channels=[16, 32, 64, 64], fc_dims=[256], out_dim=128)  # the tiny configs' encoder
    x = torch.randn(24, 1, 96, 64, generator=torch.Generator().manual_seed(0))
    for seed in range(3):
        torch.manual_seed(seed)
        default = VGGish(**widths)
        torch.manual_seed(seed)
        assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(),
                                                      VGGish(**widths, init="pytorch").state_dict().values()))
        he = VGGish(**widths, init="he")
        for name, p in he.named_parameters():
            if name.endswith("bias"):
                assert torch.count_nonzero(p) == 0, name
            else:
                # He normal: std sqrt(2 / fan_in). The sample std of n normal draws has a relative standard
                # error of 1 / sqrt(2 n) (144 draws for the first conv, ~6 %); allow 4 of them.
                expected = (2.0 / p[0].numel()) ** 0.5
                bound = 4 / (2 * p.numel()) ** 0.5
                assert abs(float(p.std()) / expected - 1) < bound, (name, float(p.std()), expected)
        # 8 ReLU layers: PyTorch's defaults shrink the spread ~2.4x per layer, He keeps its order of magnitude
        d, h = _relu_spreads(default, x), _relu_spreads(he, x)
        assert len(d) == len(h) == 8
        assert d[-1] / d[0] < 0.01, d
        assert h[-1] / h[0] > 0.2, h


def test_init_unknown_and_from_cfg():
    with pytest.raises(ValueError, match="MODEL.AUDIO_ENCODER.INIT.*'he'"):
        VGGish(**TINY, init="xavier")
    cfg = get_cfg()
    add_aqformer_config(cfg)
    assert cfg.MODEL.AUDIO_ENCODER.INIT == "pytorch"
    cfg.MODEL.AUDIO_ENCODER.CONV_CHANNELS = [2, 4, 4, 8]
    cfg.MODEL.AUDIO_ENCODER.FC_DIMS = [16]
    cfg.MODEL.AUDIO_ENCODER.INIT = "he"
    model = build_audio_encoder(cfg)
    assert all(torch.count_nonzero(p) == 0 for n, p in model.named_parameters() if n.endswith("bias"))
