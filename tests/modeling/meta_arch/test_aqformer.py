"""The AQFormer meta-architecture end to end with the tiny config (configs/synthavs/Base-Tiny.yaml):
64x64 frames, T = 5, batches of B = 2 clips, random initialisation.

Covers: the training loss dict, gradients reaching every parameter that should learn (with the known
exceptions of helpers.py checked precisely), mask_valid, the inference output and its resizing, input
validation, every ablation of the paper's §4.4 (one training step each) and the dependence on audio.
"""
import math

import pytest
import torch
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode  # records the aten ops a forward runs

from aqformer_d2.modeling import AQFormer

from .helpers import TINY_CONFIG, check_gradients, gradient_exceptions, make_cfg, make_clip

T, SIZE = 5, 64
VALID = [True, False, True, True, False]


def _build(overrides=None, seed=0):
    cfg = make_cfg(TINY_CONFIG, overrides)
    torch.manual_seed(seed)
    return build_model(cfg), cfg


def _batch(seed=0, **kwargs):
    g = torch.Generator().manual_seed(seed)
    return [make_clip(g, T, SIZE, SIZE, valid=VALID, **kwargs), make_clip(g, T, SIZE, SIZE, **kwargs)]


def _num_layers(cfg):
    return 3 * cfg.MODEL.AQ_TRANSFORMER_DECODER.DEC_STAGES


def _expected_loss_names(cfg):
    names = {"loss_bce", "loss_dice"}
    names |= {f"loss_{k}_{i}" for k in ("bce", "dice") for i in range(_num_layers(cfg) - 1)}
    if cfg.MODEL.AQFORMER.SIM_WEIGHT > 0:
        names.add("loss_sim")
    return names


def _check_loss_dict(losses, cfg):
    assert set(losses) == _expected_loss_names(cfg)
    for name, value in losses.items():
        assert value.dim() == 0, name
        assert torch.isfinite(value), name
        assert value.requires_grad, name
    # BCE of non-degenerate logits against {0, 1} targets is strictly positive
    assert losses["loss_bce"].item() > 0


def _infer(model, clips):
    model.eval()
    with torch.no_grad():
        return model(clips)


# ---------------------------------------------------------------------------------------------- training
def test_registered_and_built_from_cfg():
    model, cfg = _build()
    assert cfg.MODEL.META_ARCHITECTURE == "AQFormer"
    assert META_ARCH_REGISTRY.get("AQFormer") is AQFormer
    assert isinstance(model, AQFormer)
    assert model.num_frames == T


def test_training_returns_finite_scalar_losses():
    model, cfg = _build()
    model.train()
    losses = model(_batch())
    _check_loss_dict(losses, cfg)
    assert "loss_sim" in losses and losses["loss_sim"].item() > 0
    # 3N = 6 decoder layers: last layer + 5 auxiliary layers of deep supervision
    assert len([k for k in losses if k.startswith("loss_bce")]) == _num_layers(cfg) == 6


def test_sim_weight_zero_drops_loss_sim():
    model, cfg = _build(["MODEL.AQFORMER.SIM_WEIGHT", 0.0])
    model.train()
    losses = model(_batch())
    assert "loss_sim" not in losses
    _check_loss_dict(losses, cfg)


def test_every_learnable_parameter_gets_a_gradient():
    model, cfg = _build()
    model.train()
    assert all(p.requires_grad for p in model.parameters())
    sum(model(_batch()).values()).backward()
    exceptions = gradient_exceptions(model, cfg, first_step=True)
    check_gradients(model, exceptions)
    # the printed eq. (1) really is exactly zero for f_q / f_k, but f_v / f_w of the same module learn
    for i in range(3):
        assert model.pixel_decoder.av_attn[i].f_v.weight.grad.abs().max() > 0
        assert model.pixel_decoder.av_attn[i].f_w.weight.grad.abs().max() > 0


def test_pixel_decoder_level_embed_learns_after_the_first_step():
    """level_embed gets exactly 0 on step 1 (zero-initialised sampling_offsets / attention_weights
    weights) and a real gradient on step 2; the printed eq. (1) f_q / f_k stay at exactly 0."""
    model, cfg = _build()
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    clips = _batch()
    sum(model(clips).values()).backward()
    assert model.pixel_decoder.level_embed.grad.abs().max() == 0
    layer0 = model.pixel_decoder.encoder.layers[0].self_attn
    assert layer0.sampling_offsets.weight.abs().max() == 0 and layer0.attention_weights.weight.abs().max() == 0
    optimizer.step()
    optimizer.zero_grad()
    assert layer0.sampling_offsets.weight.abs().max() > 0
    sum(model(clips).values()).backward()
    check_gradients(model, gradient_exceptions(model, cfg, first_step=False))
    assert model.pixel_decoder.level_embed.grad.abs().max() > 0


def test_invalid_frames_change_no_loss():
    model, _ = _build()
    model.train()
    clips = _batch()
    reference = model(clips)
    altered = [dict(c) for c in clips]
    masks = clips[0]["masks"].clone()
    invalid = ~clips[0]["mask_valid"]
    masks[invalid] = 1 - masks[invalid]  # flip every pixel of the unlabelled frames
    altered[0]["masks"] = masks
    changed = model(altered)
    assert set(changed) == set(reference)
    for name in reference:
        assert torch.equal(changed[name], reference[name]), name
    # sanity: flipping a LABELLED frame does change the mask losses
    masks = clips[0]["masks"].clone()
    masks[0] = 1 - masks[0]
    altered[0]["masks"] = masks
    assert not torch.equal(model(altered)["loss_bce"], reference["loss_bce"])


def test_no_valid_frame_gives_zero_mask_losses():
    model, _ = _build()
    model.train()
    clips = _batch()
    for c in clips:
        c["mask_valid"] = torch.zeros(T, dtype=torch.bool)
    losses = model(clips)
    for name, value in losses.items():
        if name != "loss_sim":
            assert value.item() == 0.0, name
    assert losses["loss_sim"].item() > 0  # AVSim needs no ground truth
    sum(losses.values()).backward()


def test_training_without_masks_raises():
    model, _ = _build()
    model.train()
    clips = _batch(with_masks=False)
    with pytest.raises(KeyError, match="masks"):
        model(clips)


# ---------------------------------------------------------------------------------------------- inference
class _NonFloat64Ops(TorchDispatchMode):
    """Records every aten op that returns a floating-point tensor of another dtype than float64."""

    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        leaves = torch.utils._pytree.tree_leaves(out)
        if any(isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64 for t in leaves):
            self.ops.add(str(func))
        return out


def test_float64_model_computes_everything_in_float64():
    """model.double() runs forward, losses, backward and inference wholly in float64 (inputs, positional
    encodings and the AVSim loss follow the parameters' dtype): no float32 round-off enters, which the
    2-process gradient comparison of tests/test_train_net.py relies on."""
    model, cfg = _build()
    model = model.double().train()
    assert model.dtype == torch.float64
    batch = _batch()  # uint8 frames, float32 audio, as the mapper gives them
    with _NonFloat64Ops() as recorder:
        losses = model(batch)
        sum(losses.values()).backward()
    assert not recorder.ops, f"ops computed in another floating dtype than float64: {sorted(recorder.ops)}"
    assert all(v.dtype == torch.float64 for v in losses.values())
    assert all(p.grad.dtype == torch.float64 for p in model.parameters() if p.grad is not None)
    with _NonFloat64Ops() as recorder:
        out = _infer(model, batch)
    assert not recorder.ops, f"inference ops in another floating dtype than float64: {sorted(recorder.ops)}"
    assert out[0]["sound_probs"].dtype == torch.float64


def test_inference_output_format():
    model, _ = _build()
    out = _infer(model, _batch(with_masks=False))
    assert isinstance(out, list) and len(out) == 2
    for r in out:
        assert set(r) == {"sound_probs"}
        p = r["sound_probs"]
        assert p.dtype == torch.float32 and p.shape == (T, SIZE, SIZE)
        assert p.min() >= 0 and p.max() <= 1
        assert p.std() > 0  # not a constant map


def test_inference_resizes_to_height_width():
    model, _ = _build()
    clips = _batch(with_masks=False)
    native = _infer(model, clips)
    resized_clips = [dict(c, height=96, width=80) for c in clips]
    resized = _infer(model, resized_clips)
    for n, r in zip(native, resized):
        assert r["sound_probs"].shape == (T, 96, 80)
        # bilinear resize of the logits, then sigmoid
        logits = torch.logit(n["sound_probs"].double())[None]
        expected = F.interpolate(logits, size=(96, 80), mode="bilinear", align_corners=False)[0].sigmoid()
        torch.testing.assert_close(r["sound_probs"].double(), expected, atol=1e-4, rtol=0)


def test_inference_crops_padding_of_each_clip():
    """Clips of different, non-divisible sizes in one batch: each output has its clip's own size."""
    model, _ = _build()
    g = torch.Generator().manual_seed(3)
    a = make_clip(g, T, 60, 70, with_masks=False)
    b = make_clip(g, T, 48, 64, with_masks=False)
    del b["height"], b["width"]  # no target size: the input size is kept
    out = _infer(model, [a, b])
    assert out[0]["sound_probs"].shape == (T, 60, 70)
    assert out[1]["sound_probs"].shape == (T, 48, 64)


@pytest.mark.parametrize(
    "image_frames, audio_frames", [(4, 4), (6, 6), (5, 4), (4, 5)], ids=["4", "6", "audio4", "images4"]
)
def test_wrong_number_of_frames_raises(image_frames, audio_frames):
    model, _ = _build()
    g = torch.Generator().manual_seed(0)
    clip = make_clip(g, image_frames, SIZE, SIZE, with_masks=False)
    clip["audio"] = torch.randn(audio_frames, 1, 96, 64, generator=g)
    good = make_clip(g, T, SIZE, SIZE, with_masks=False)
    with pytest.raises(ValueError, match=r"clip 1 .*NUM_FRAMES is 5"):
        _infer(model, [good, clip])


def test_missing_audio_raises():
    model, _ = _build()
    clip = _batch(with_masks=False)[0]
    del clip["audio"]
    with pytest.raises(KeyError, match="audio"):
        _infer(model, [clip])


# ---------------------------------------------------------------------------------------------- ablations
def _check_query_vanilla(model, cfg):
    assert model.predictor.query_type == "vanilla"
    assert hasattr(model.predictor, "query_embed") and not hasattr(model.predictor, "audio_query_proj")


def _check_scope_own(model, cfg):
    assert all(layer.cross_attn.scope == "own" for layer in model.predictor.layers)


def _check_abti(model, cfg):
    assert sorted(model.pixel_decoder.abti.keys()) == [str(p) for p in cfg.MODEL.AQ_PIXEL_DECODER.ABTI_POSITIONS]


def _check_stages(model, cfg):
    assert len(model.predictor.layers) == _num_layers(cfg)


def _check_sigmoid(model, cfg):
    assert all(m.mode == "sigmoid" for m in model.pixel_decoder.av_attn)
    # the sigmoid reading of eq. (1) makes f_q / f_k learn
    for m in model.pixel_decoder.av_attn:
        assert m.f_q.weight.grad.abs().max() > 0 and m.f_k.weight.grad.abs().max() > 0


def _check_mask_embed_plain(model, cfg):
    assert model.predictor.mask_embed.mode == "plain"
    assert not any(n.startswith("predictor.mask_embed.") for n, _ in model.named_parameters())


ABLATIONS = {
    "vanilla_query": (["MODEL.AQ_TRANSFORMER_DECODER.QUERY_TYPE", "vanilla"], _check_query_vanilla),
    "cross_attn_own": (["MODEL.AQ_TRANSFORMER_DECODER.CROSS_ATTN_SCOPE", "own"], _check_scope_own),
    "abti_none": (["MODEL.AQ_PIXEL_DECODER.ABTI_POSITIONS", []], _check_abti),
    "abti_4": (["MODEL.AQ_PIXEL_DECODER.ABTI_POSITIONS", [4]], _check_abti),
    "abti_123": (["MODEL.AQ_PIXEL_DECODER.ABTI_POSITIONS", [1, 2, 3]], _check_abti),
    "sim_weight_0": (["MODEL.AQFORMER.SIM_WEIGHT", 0.0], None),
    "dec_stages_1": (["MODEL.AQ_TRANSFORMER_DECODER.DEC_STAGES", 1], _check_stages),
    "dec_stages_2": (["MODEL.AQ_TRANSFORMER_DECODER.DEC_STAGES", 2], _check_stages),
    "dec_stages_3": (["MODEL.AQ_TRANSFORMER_DECODER.DEC_STAGES", 3], _check_stages),
    "av_attn_sigmoid": (["MODEL.AQ_PIXEL_DECODER.AV_ATTN_MODE", "sigmoid"], _check_sigmoid),
    "mask_embed_plain": (["MODEL.AQ_TRANSFORMER_DECODER.MASK_EMBED", "plain"], _check_mask_embed_plain),
}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_ablation_builds_and_trains_one_step(name):
    overrides, check = ABLATIONS[name]
    model, cfg = _build(overrides)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    clips = _batch()
    losses = model(clips)
    _check_loss_dict(losses, cfg)
    total = sum(losses.values())
    total.backward()
    check_gradients(model, gradient_exceptions(model, cfg, first_step=True))
    if check is not None:
        check(model, cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer.step()
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(moved) > 0.9 * len(before)
    # the stepped model still trains and infers
    assert math.isfinite(sum(model(clips).values()).item())
    out = _infer(model, _batch(with_masks=False))
    assert out[0]["sound_probs"].shape == (T, SIZE, SIZE)


# ---------------------------------------------------------------------------------------------- audio
@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["MODEL.AQ_TRANSFORMER_DECODER.QUERY_TYPE", "vanilla"],
        ["MODEL.AQ_TRANSFORMER_DECODER.QUERY_TYPE", "vanilla", "MODEL.AQ_PIXEL_DECODER.ABTI_POSITIONS", []],
        ["MODEL.AQ_PIXEL_DECODER.AV_ATTN_MODE", "sigmoid"],
    ],
    ids=["audio_query", "vanilla_query", "vanilla_no_abti", "sigmoid"],
)
def test_output_depends_on_audio(overrides):
    """Audio-blind check: changing the audio of ONE frame of clip 1 changes clip 1's prediction (at
    least for that frame) and leaves clip 0's prediction bit-for-bit unchanged (clips are independent
    at inference); swapping two frames' audio also changes the output (the audio is frame-aligned)."""
    model, _ = _build(overrides)
    clips = _batch(with_masks=False)
    reference = _infer(model, clips)
    altered = [dict(c) for c in clips]
    audio = clips[1]["audio"].clone()
    audio[2] = torch.randn(1, 96, 64, generator=torch.Generator().manual_seed(7)) * 3
    altered[1]["audio"] = audio
    changed = _infer(model, altered)
    assert torch.equal(changed[0]["sound_probs"], reference[0]["sound_probs"])
    diff = (changed[1]["sound_probs"] - reference[1]["sound_probs"]).abs()
    assert diff[2].max() > 1e-4, diff.amax(dim=(1, 2))

    # two clearly different sounds (loud / near-silent log-mel) on frames 0 and 1, then swapped
    g = torch.Generator().manual_seed(11)
    distinct = [dict(c) for c in clips]
    audio = clips[0]["audio"].clone()
    audio[0] = torch.randn(1, 96, 64, generator=g) * 3 + 2
    audio[1] = torch.randn(1, 96, 64, generator=g) * 0.1 - 2
    distinct[0]["audio"] = audio
    swapped = [dict(c) for c in distinct]
    swapped[0]["audio"] = audio[[1, 0, 2, 3, 4]]
    before, after = _infer(model, distinct)[0]["sound_probs"], _infer(model, swapped)[0]["sound_probs"]
    assert (after - before).abs()[:2].max() > 1e-4, (after - before).abs().amax(dim=(1, 2))


def test_audio_queries_carry_the_audio():
    """With QUERY_TYPE "audio" the decoder's initial queries A^0 are a function of the audio features;
    with "vanilla" they are the same learned vectors whatever the audio."""
    for query_type, depends in (("audio", True), ("vanilla", False)):
        model, _ = _build(["MODEL.AQ_TRANSFORMER_DECODER.QUERY_TYPE", query_type])
        model.eval()
        a = torch.randn(2, T, 128, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            q1 = model.predictor.initial_queries(a, 2)
            q2 = model.predictor.initial_queries(a + 1.0, 2)
        assert q1.shape == (2, T, 64)
        assert (not torch.equal(q1, q2)) == depends, query_type


# ---------------------------------------------------------------------------------------------- audio pathways
def _record_pathway_inputs(model):
    """Forward pre-hooks recording the audio each pathway receives: eq. (1)-(2) modules, ABTI modules,
    and the transformer decoder (whose audio argument only makes A^0)."""
    seen = {"pixel": [], "abti": [], "query": []}
    handles = [m.register_forward_pre_hook(lambda _m, args: seen["pixel"].append(args[1])) for m in model.pixel_decoder.av_attn]
    handles += [m.register_forward_pre_hook(lambda _m, args: seen["abti"].append(args[1])) for m in model.pixel_decoder.abti.values()]
    handles.append(model.predictor.register_forward_pre_hook(lambda _m, args: seen["query"].append(args[2])))
    return seen, handles


@pytest.mark.parametrize("pathways", [("pixel",), ("abti",), ("query",), ("pixel", "abti", "query")])
def test_pathway_audio_reaches_only_its_pathway(pathways):
    """A clip's "pathway_audio" replaces the audio feature in exactly the named pathways: every module of
    those pathways receives the encoder's features of the replacement audio, every other module the
    clip's own; the prediction changes; naming all three pathways equals replacing "audio" itself."""
    from aqformer_d2.modeling.meta_arch.aqformer import AUDIO_PATHWAYS

    model, _ = _build()
    model.eval()
    clips = _batch(with_masks=False)
    g = torch.Generator().manual_seed(5)
    other = [torch.randn(T, 1, 96, 64, generator=g) * 2 + 1 for _ in clips]
    with torch.no_grad():
        own_feat = model.encode_audio(clips)  # [B, T, C_a]
        other_feat = model.encode_audio([{"audio": a} for a in other])
    seen, handles = _record_pathway_inputs(model)
    swapped = [dict(c, pathway_audio={p: a for p in pathways}) for c, a in zip(clips, other)]
    try:
        out = _infer(model, swapped)
    finally:
        for h in handles:
            h.remove()
    assert len(seen["pixel"]) == 3 and len(seen["abti"]) == len(model.pixel_decoder.abti) > 0 and len(seen["query"]) == 1
    for pathway in AUDIO_PATHWAYS:
        expected = other_feat if pathway in pathways else own_feat
        for received in seen[pathway]:
            assert torch.equal(received, expected), pathway
    reference = _infer(model, clips)
    for b in range(2):
        assert (out[b]["sound_probs"] - reference[b]["sound_probs"]).abs().max() > 1e-4, (pathways, b)
    if len(pathways) == 3:
        plain = _infer(model, [dict(c, audio=a) for c, a in zip(clips, other)])
        for b in range(2):
            assert torch.equal(out[b]["sound_probs"], plain[b]["sound_probs"])


def test_pathway_audio_errors():
    model, _ = _build()
    model.eval()
    clips = _batch(with_masks=False)
    a = torch.zeros(T, 1, 96, 64)
    with pytest.raises(KeyError, match="unknown audio pathway"):
        _infer(model, [dict(c, pathway_audio={"decoder": a}) for c in clips])
    with pytest.raises(ValueError, match="different 'pathway_audio' pathways"):
        _infer(model, [dict(clips[0], pathway_audio={"abti": a}), clips[1]])
    with pytest.raises(ValueError, match="has shape"):
        _infer(model, [dict(c, pathway_audio={"abti": a[:3]}) for c in clips])
