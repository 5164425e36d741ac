"""Tests of AudioQueriedTransformerDecoder: config/registry, shapes, round-robin layers, query types,
cross-attention scope inside the full decoder, gradients through the criterion."""
import pytest
import torch
from detectron2.config import get_cfg

from aqformer_d2 import add_aqformer_config
from aqformer_d2.modeling.losses import AQFormerCriterion
from aqformer_d2.modeling.transformer_decoder import (
    AQ_TRANSFORMER_DECODER_REGISTRY,
    AudioQueriedTransformerDecoder,
    build_aq_transformer_decoder,
)

B, T, C, C_A = 2, 4, 8, 6
SIZES = ((2, 2), (2, 3), (4, 4))  # lowest resolution first
H4 = W4 = 8
# float64: the tests below compare the decoder's predictions with eq. (6) recomputed outside it (einsum
# over C = 8 channels, possibly in another summation order than the decoder's kernels). Two evaluation
# orders of an n-term sum differ by at most 2(n-1)u * sum|terms| (Higham, Accuracy and Stability of
# Numerical Algorithms, section 4.2): with u = 2**-53 = 1.1e-16 that is ~1e-15 relative on any CPU and
# thread count, far below assert_close's float64 tolerances (rtol 1e-7, atol 1e-7); in float32 the bound
# (8e-7 * sum|terms|) is not far enough below its float32 atol of 1e-5 for every draw.
DTYPE = torch.float64


def _cfg(**dec):
    cfg = get_cfg()
    add_aqformer_config(cfg)
    cfg.MODEL.AQ_PIXEL_DECODER.CONVS_DIM = C
    cfg.MODEL.AUDIO_ENCODER.OUT_DIM = C_A
    cfg.MODEL.AQFORMER.NUM_FRAMES = T
    d = cfg.MODEL.AQ_TRANSFORMER_DECODER
    d.DEC_STAGES, d.NHEADS, d.DIM_FEEDFORWARD = 1, 2, 16
    for key, value in dec.items():
        setattr(d, key, value)
    return cfg


def _decoder(**dec):
    torch.manual_seed(0)
    return build_aq_transformer_decoder(_cfg(**dec)).to(DTYPE).eval()


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    ms = [torch.randn(B * T, C, h, w, generator=g, dtype=DTYPE) for h, w in SIZES]
    mask_features = torch.randn(B * T, C, H4, W4, generator=g, dtype=DTYPE)
    audio = torch.randn(B, T, C_A, generator=g, dtype=DTYPE)
    return ms, mask_features, audio


def test_registered_and_built_from_config():
    assert AQ_TRANSFORMER_DECODER_REGISTRY.get("AudioQueriedTransformerDecoder") is AudioQueriedTransformerDecoder
    dec = _decoder(QUERY_TYPE="vanilla", CROSS_ATTN_SCOPE="own", DEC_STAGES=2)
    assert isinstance(dec, AudioQueriedTransformerDecoder)
    assert (dec.query_type, dec.cross_attn_scope, dec.num_layers, dec.hidden_dim) == ("vanilla", "own", 6, C)
    assert dec.query_embed.weight.shape == (T, C)


@torch.no_grad()
@pytest.mark.parametrize("stages", [1, 2, 3])
def test_stages_give_3n_layers_round_robin_and_shapes(stages):
    dec = _decoder(DEC_STAGES=stages, MASK_EMBED="plain")
    ms, mask_features, audio = _inputs()
    out = dec(ms, mask_features, audio)
    num_layers = 3 * stages
    assert len(dec.layers) == num_layers
    assert out["pred_masks"].shape == (B, T, H4, W4)
    assert len(out["aux_outputs"]) == num_layers - 1
    assert all(aux["pred_masks"].shape == (B, T, H4, W4) for aux in out["aux_outputs"])
    assert len(out["queries"]) == num_layers
    assert all(q.shape == (B, T, C) for q in out["queries"])
    assert len(out["layer_features"]) == num_layers
    for layer, feat in enumerate(out["layer_features"]):
        assert feat is ms[layer % 3]  # lowest resolution first, round-robin
    # the last prediction is eq. (6) with A^L: a plain per-frame product with the mask features
    expected = torch.einsum("btchw,btc->bthw", mask_features.reshape(B, T, C, H4, W4), out["queries"][-1])
    torch.testing.assert_close(out["pred_masks"], expected)
    first = torch.einsum("btchw,btc->bthw", mask_features.reshape(B, T, C, H4, W4), out["queries"][0])
    torch.testing.assert_close(out["aux_outputs"][0]["pred_masks"], first)


@torch.no_grad()
def test_norm_mlp_mask_embed_multiplies_mask_features_by_mlp_of_normalised_query():
    dec = _decoder(MASK_EMBED="norm_mlp")
    ms, mask_features, audio = _inputs()
    out = dec(ms, mask_features, audio)
    embed = dec.mask_embed.mlp(torch.nn.functional.layer_norm(out["queries"][-1], (C,),
                                                              dec.mask_embed.norm.weight, dec.mask_embed.norm.bias))
    expected = torch.einsum("btchw,btc->bthw", mask_features.reshape(B, T, C, H4, W4), embed)
    torch.testing.assert_close(out["pred_masks"], expected)
    plain = torch.einsum("btchw,btc->bthw", mask_features.reshape(B, T, C, H4, W4), out["queries"][-1])
    assert not torch.allclose(out["pred_masks"], plain)


@torch.no_grad()
def test_audio_queries_use_the_audio():
    dec = _decoder(QUERY_TYPE="audio")
    ms, mask_features, audio = _inputs()
    base = dec(ms, mask_features, audio)["pred_masks"]
    changed = dec(ms, mask_features, audio + torch.randn_like(audio))["pred_masks"]
    assert not torch.allclose(base, changed)


@torch.no_grad()
def test_vanilla_queries_ignore_the_audio():
    dec = _decoder(QUERY_TYPE="vanilla")
    assert not hasattr(dec, "audio_query_proj")
    ms, mask_features, audio = _inputs()
    base = dec(ms, mask_features, audio)
    changed = dec(ms, mask_features, 100.0 * torch.randn_like(audio))
    without = dec(ms, mask_features, None)
    for other in (changed, without):
        torch.testing.assert_close(other["pred_masks"], base["pred_masks"], rtol=0, atol=0)
        for qa, qb in zip(other["queries"], base["queries"]):
            torch.testing.assert_close(qa, qb, rtol=0, atol=0)


def _first_cross_attention(dec, ms, mask_features, audio):
    captured = {}
    handle = dec.layers[0].cross_attn.register_forward_hook(lambda m, i, o: captured.setdefault("x", o))
    with torch.no_grad():
        dec(ms, mask_features, audio)
    handle.remove()
    return captured["x"]  # X^1, [B, T, C]


@pytest.mark.parametrize("scope", ["all", "own"])
def test_cross_attention_scope_inside_decoder(scope):
    """Perturb frame 3 (index 2) of clip 0 at the scale of layer 1: with "all" query 1 (index 0) sees it,
    with "own" only query 3 does."""
    dec = _decoder(CROSS_ATTN_SCOPE=scope)
    ms, mask_features, audio = _inputs()
    base = _first_cross_attention(dec, ms, mask_features, audio)
    perturbed = [f.clone() for f in ms]
    perturbed[0][0 * T + 2] += 3.0 * torch.randn_like(perturbed[0][2])
    out = _first_cross_attention(dec, perturbed, mask_features, audio)
    assert not torch.allclose(out[0, 2], base[0, 2])
    if scope == "all":
        assert not torch.allclose(out[0, 0], base[0, 0])
    else:
        for t in (0, 1, 3):
            torch.testing.assert_close(out[0, t], base[0, t], rtol=0, atol=0)
    torch.testing.assert_close(out[1], base[1], rtol=0, atol=0)  # never across clips


@pytest.mark.parametrize("query_type", ["audio", "vanilla"])
def test_every_parameter_gets_a_gradient_through_the_criterion(query_type):
    dec = _decoder(QUERY_TYPE=query_type, DEC_STAGES=2).train()
    ms, mask_features, audio = _inputs()
    ms = [f.requires_grad_() for f in ms]
    mask_features.requires_grad_()
    out = dec(ms, mask_features, audio)
    gt = (torch.rand(B, T, 4 * H4, 4 * W4, generator=torch.Generator().manual_seed(1)) > 0.5).to(torch.uint8)
    valid = torch.tensor([[True, False, False, False], [True, True, True, True]])
    losses = AQFormerCriterion()(out, gt, valid)
    sum(losses.values()).backward()
    for name, p in dec.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    for f in ms + [mask_features]:
        assert f.grad is not None and f.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("QUERY_TYPE", "object", "QUERY_TYPE"),
        ("CROSS_ATTN_SCOPE", "frame", "CROSS_ATTN_SCOPE"),
        ("DEC_STAGES", 0, "DEC_STAGES"),
        ("NHEADS", 3, "NHEADS"),
        ("DROPOUT", 1.0, "DROPOUT"),
    ],
)
def test_bad_config_raises(key, value, match):
    with pytest.raises(ValueError, match=match):
        build_aq_transformer_decoder(_cfg(**{key: value}))


def test_bad_inputs_raise():
    dec = _decoder()
    ms, mask_features, audio = _inputs()
    with pytest.raises(ValueError, match="list of 3"):
        dec(ms[:2], mask_features, audio)
    with pytest.raises(ValueError, match="lowest resolution first"):
        dec(ms[::-1], mask_features, audio)
    with pytest.raises(ValueError, match=r"multi_scale_features\[1\]"):
        dec([ms[0], ms[1][:, :-1], ms[2]], mask_features, audio)
    with pytest.raises(ValueError, match="mask_features"):
        dec(ms, mask_features[:-1], audio)
    with pytest.raises(ValueError, match="channels"):
        dec(ms, mask_features, audio[..., :-1])
    with pytest.raises(ValueError, match="B\\*T"):
        dec(ms, mask_features, audio[:1])
    with pytest.raises(ValueError, match="required"):
        dec(ms, mask_features, None)
    vanilla = _decoder(QUERY_TYPE="vanilla")
    with pytest.raises(ValueError, match="T=4"):
        vanilla([f[: 3 * 2] for f in ms], mask_features[:6], audio[:, :3].reshape(2, 3, C_A))
