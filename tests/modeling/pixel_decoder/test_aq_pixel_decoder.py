"""The registered AQPixelDecoder with a tiny configuration."""
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec

from aqformer_d2.config import add_aqformer_config
from aqformer_d2.modeling.pixel_decoder import ABTI, AQ_PIXEL_DECODER_REGISTRY, AQPixelDecoder, build_aq_pixel_decoder

B, T, CA, CF, SIZE = 2, 2, 8, 32, 64
CHANNELS = {"res2": 8, "res3": 12, "res4": 16, "res5": 20}
STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


def _cfg(positions=(1, 2, 3, 4), mode="printed", abti_logit_scale="sqrt_dim", fw_norm=True):
    cfg = get_cfg()
    add_aqformer_config(cfg)
    pd = cfg.MODEL.AQ_PIXEL_DECODER
    pd.CONVS_DIM = CF
    pd.AV_ATTN_DIM = 16
    pd.AV_ATTN_MODE = mode
    pd.ENC_LAYERS = 2
    pd.ENC_HEADS = 4
    pd.ENC_POINTS = 2
    pd.ENC_DIM_FEEDFORWARD = 64
    pd.ABTI_DIM = 16
    pd.ABTI_HEADS = 2
    pd.ABTI_POSITIONS = list(positions)
    pd.ABTI_LOGIT_SCALE = abti_logit_scale
    pd.FW_NORM = fw_norm
    cfg.MODEL.AUDIO_ENCODER.OUT_DIM = CA
    return cfg


def _shapes():
    return {name: ShapeSpec(channels=CHANNELS[name], stride=STRIDES[name]) for name in CHANNELS}


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = {
        name: torch.randn(B * T, CHANNELS[name], SIZE // STRIDES[name], SIZE // STRIDES[name], generator=g)
        for name in CHANNELS
    }
    return feats, torch.randn(B, T, CA, generator=g)


def _build(**kwargs):
    torch.manual_seed(0)
    return build_aq_pixel_decoder(_cfg(**kwargs), _shapes())


def test_registered_and_output_shapes():
    assert AQ_PIXEL_DECODER_REGISTRY.get("AQPixelDecoder") is AQPixelDecoder
    model = _build()
    feats, audio = _inputs()
    mask_features, multi_scale = model(feats, audio)
    assert mask_features.shape == (B * T, CF, SIZE // 4, SIZE // 4)
    assert [tuple(x.shape) for x in multi_scale] == [(B * T, CF, SIZE // s, SIZE // s) for s in (32, 16, 8)]


@pytest.mark.parametrize("positions", [[], [4], [1, 2, 3], [1, 2, 3, 4]])
def test_abti_positions_respected(positions):
    model = _build(positions=positions)
    abti_modules = [m for m in model.modules() if isinstance(m, ABTI)]
    assert len(abti_modules) == len(positions)
    assert sorted(int(k) for k in model.abti.keys()) == sorted(positions)
    feats, audio = _inputs()
    calls = []
    hooks = [m.register_forward_hook(lambda mod, args, out: calls.append(tuple(out.shape))) for m in abti_modules]
    mask_features, multi_scale = model(feats, audio)
    for hook in hooks:
        hook.remove()
    scale_shapes = [tuple(x.shape) for x in multi_scale] + [tuple(mask_features.shape)]
    assert calls == [scale_shapes[p - 1] for p in sorted(positions)]


def test_mask_features_depend_on_other_frames_only_with_abti():
    feats, audio = _inputs()
    perturbed = {k: v.clone() for k, v in feats.items()}
    perturbed["res2"][1] += torch.randn(perturbed["res2"][1].shape)  # clip 0, frame 2 at the largest scale
    for positions, should_change in (([], False), ([4], True)):
        model = _build(positions=positions).eval()
        with torch.no_grad():
            out = model(feats, audio)[0][0]  # clip 0, frame 1
            out2 = model(perturbed, audio)[0][0]
        assert (not torch.allclose(out, out2, atol=1e-6)) == should_change


@pytest.mark.parametrize("mode", ["printed", "sigmoid"])
def test_gradients_reach_every_parameter(mode):
    model = _build(mode=mode)
    with torch.no_grad():
        # Deformable DETR zero-initialises the offset / attention-weight projections, which blocks the
        # gradient to the query (hence to the level embedding) on the very first step only. Give them
        # trained-like values so every path is exercised.
        for layer in model.encoder.layers:
            layer.self_attn.sampling_offsets.weight.normal_(0, 0.1)
            layer.self_attn.attention_weights.weight.normal_(0, 0.1)
    feats, audio = _inputs()
    audio.requires_grad_(True)
    mask_features, multi_scale = model(feats, audio)
    g = torch.Generator().manual_seed(1)
    loss = sum((x * torch.randn(x.shape, generator=g)).sum() for x in [mask_features, *multi_scale])
    loss.backward()
    assert audio.grad is not None and audio.grad.abs().sum() > 0
    # In "printed" mode the softmax runs over one key, so f_q and f_k get an exactly zero gradient
    # (docs/paper_choices.md); everything else must receive a non-zero gradient.
    dead = {"f_q", "f_k"} if mode == "printed" else set()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        if name.startswith("av_attn.") and name.split(".")[2] in dead:
            assert torch.all(param.grad == 0), name
        else:
            assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("scale, multiplier", [("sqrt_dim", 16 ** -0.5), ("none", 1.0)])
def test_abti_logit_scale_from_config(scale, multiplier):
    """MODEL.AQ_PIXEL_DECODER.ABTI_LOGIT_SCALE reaches every ABTI instance (ABTI_DIM = 16 here)."""
    model = _build(abti_logit_scale=scale)
    abti_modules = [m for m in model.modules() if isinstance(m, ABTI)]
    assert len(abti_modules) == 4
    assert all(m.logit_scale == scale and m.logit_multiplier == pytest.approx(multiplier) for m in abti_modules)


def _affine_defect(conv, x, y):
    """|f(x + y) - f(x) - f(y) + f(0)|: 0 (up to round-off) exactly when f is affine."""
    with torch.no_grad():
        return (conv(x + y) - conv(x) - conv(y) + conv(torch.zeros_like(x))).abs().max().item()


@pytest.mark.parametrize("fw_norm", [True, False])
def test_fw_norm_switch(fw_norm):
    """FW_NORM False: f_w of eq. (2) is the printed linear map (affine, with a bias); True: followed by GN.
    The stride-4 path keeps GN either way. Round-off of the affine check: a few float32 ulps of values
    of order 10 (1x1 conv over <= 20 channels of unit normals), far below the 1e-3 threshold; GroupNorm's
    defect is of order 1."""
    model = _build(fw_norm=fw_norm)
    g = torch.Generator().manual_seed(2)
    for attn, name in zip(model.av_attn, model.encoder_feature_names):
        x, y = (torch.randn(2, CHANNELS[name], 4, 4, generator=g) for _ in range(2))
        assert isinstance(attn.f_w.norm, torch.nn.GroupNorm) == fw_norm
        assert (attn.f_w.bias is None) == fw_norm
        assert (_affine_defect(attn.f_w, x, y) < 1e-3) == (not fw_norm)
    assert isinstance(model.lateral_conv.norm, torch.nn.GroupNorm)
    assert isinstance(model.output_conv.norm, torch.nn.GroupNorm)


def test_bad_config_and_input_are_rejected():
    with pytest.raises(ValueError, match="ABTI_LOGIT_SCALE"):
        build_aq_pixel_decoder(_cfg(abti_logit_scale="sqrt"), _shapes())
    cfg = _cfg(positions=[0, 2])
    with pytest.raises(ValueError, match="ABTI_POSITIONS"):
        build_aq_pixel_decoder(cfg, _shapes())
    cfg = _cfg(mode="cosine")
    with pytest.raises(ValueError, match="AV_ATTN_MODE"):
        build_aq_pixel_decoder(cfg, _shapes())
    cfg = _cfg()
    cfg.MODEL.AQ_PIXEL_DECODER.IN_FEATURES = ["res2", "res3", "res4", "res6"]
    with pytest.raises(ValueError, match="res6"):
        build_aq_pixel_decoder(cfg, _shapes())
    model = _build(positions=[])
    feats, audio = _inputs()
    with pytest.raises(ValueError, match="B\\*T"):
        model(feats, audio[:1])
    del feats["res3"]
    with pytest.raises(KeyError, match="res3"):
        model(feats, audio)
