"""Tests of the AQFormer losses: eq. (14) BCE / Dice on hand-computed values, valid-frame masking,
eq. (7)-(8) AVSim loss, and the eq. (13)-(14) criterion."""
import math

import pytest
import torch

from aqformer_d2.modeling.losses import AQFormerCriterion, avsim_loss, dice_loss, sigmoid_bce_loss

LN3 = math.log(3.0)


def _two_valid_frames():
    """B=2, T=2; valid frames: (clip 0, frame 0) and (clip 1, frame 1), each 1 x 2 pixels.

    frame A: logits [0, ln 3] -> p = [1/2, 3/4], gt [1, 0]
        BCE  = (ln 2 + ln 4) / 2 = 1.5 ln 2 = 1.0397207708
        Dice = 1 - (2 * 0.5 + 1) / (1.25 + 1 + 1) = 1 - 2 / 3.25 = 0.3846153846
    frame B: logits [ln 3, ln 3] -> p = [3/4, 3/4], gt [1, 1]
        BCE  = -ln(3/4) = 0.2876820725
        Dice = 1 - (2 * 1.5 + 1) / (1.5 + 2 + 1) = 1 - 4 / 4.5 = 0.1111111111
    means: BCE 0.6637014216, Dice 0.2478632479.
    """
    pred = torch.tensor(
        [[[[0.0, LN3]], [[5.0, -7.0]]],
         [[[-3.0, 2.0]], [[LN3, LN3]]]],
        dtype=torch.float64,
    )  # [B=2, T=2, 1, 2]
    gt = torch.tensor([[[[1, 0]], [[1, 1]]], [[[0, 0]], [[1, 1]]]], dtype=torch.uint8)
    valid = torch.tensor([[True, False], [False, True]])
    return pred, gt, valid


def test_bce_and_dice_hand_computed():
    pred, gt, valid = _two_valid_frames()
    assert sigmoid_bce_loss(pred, gt, valid).item() == pytest.approx(0.6637014216, abs=1e-9)
    assert dice_loss(pred, gt, valid).item() == pytest.approx(0.2478632479, abs=1e-9)
    # a single frame
    assert sigmoid_bce_loss(pred[:1, :1], gt[:1, :1]).item() == pytest.approx(1.0397207708, abs=1e-9)
    assert dice_loss(pred[:1, :1], gt[:1, :1]).item() == pytest.approx(0.3846153846, abs=1e-9)


def test_logits_are_bilinearly_upsampled_to_the_ground_truth_size():
    """logits 1 x 2 [0, ln 3] -> bilinear (align_corners=False) 1 x 4: [0, ln3/4, 3 ln3/4, ln3]
    p = [1/2, 3^(1/4)/(1+3^(1/4)), 3^(3/4)/(1+3^(3/4)), 3/4] = [0.5, 0.5682, 0.6951, 0.75], gt [1, 1, 0, 0]
    BCE  = (ln 2 + ln(1 + 3^(-1/4)) + ln(1 + 3^(3/4)) + ln 4) / 4 = 0.9580887774
    Dice = 1 - (2 (0.5 + 0.5682) + 1) / (2.5133 + 2 + 1) = 0.4311095925
    (downsampling the ground truth to 1 x 2 instead would give the 1.0397 / 0.3846 of frame A above)."""
    pred = torch.tensor([[[[0.0, LN3]]]], dtype=torch.float64)
    gt = torch.tensor([[[[1, 1, 0, 0]]]], dtype=torch.uint8)
    assert sigmoid_bce_loss(pred, gt).item() == pytest.approx(0.9580887774, abs=1e-9)
    assert dice_loss(pred, gt).item() == pytest.approx(0.4311095925, abs=1e-9)


@pytest.mark.parametrize("loss_fn", [sigmoid_bce_loss, dice_loss])
def test_invalid_frames_give_no_loss_and_no_gradient(loss_fn):
    pred, gt, valid = _two_valid_frames()
    pred = pred.clone().requires_grad_()
    loss = loss_fn(pred, gt, valid)
    loss.backward()
    assert torch.all(pred.grad[~valid] == 0)
    assert torch.all(pred.grad[valid].abs().sum(dim=(-2, -1)) > 0)
    changed = pred.detach().clone()
    changed[~valid] = torch.tensor([[float("nan"), 1e6]], dtype=torch.float64)
    assert loss_fn(changed, gt, valid).item() == loss.item()


@pytest.mark.parametrize("loss_fn", [sigmoid_bce_loss, dice_loss])
def test_no_valid_frame_gives_zero_loss(loss_fn):
    pred, gt, _ = _two_valid_frames()
    pred = pred.clone().requires_grad_()
    loss = loss_fn(pred, gt, torch.zeros(2, 2, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.all(pred.grad == 0)


def test_mask_loss_bad_inputs_raise():
    pred, gt, valid = _two_valid_frames()
    with pytest.raises(ValueError, match="agree on B, T"):
        sigmoid_bce_loss(pred, gt[:, :1], valid)
    with pytest.raises(ValueError, match="mask_valid"):
        dice_loss(pred, gt, valid.to(torch.uint8))


# ---------------------------------------------------------------- AVSim, eq. (7)-(8)
# The AVSim tests run in float64: they compare a sum of |cosine differences| (each cosine a dot product
# over C <= 5 channels, normalised) against a closed form or against another reduction of the same
# terms. In float64 (u = 2**-53 = 1.1e-16) each cosine carries a relative error of a few dozen u at
# most, so the sums of at most L*T*T = 18 entries are off by < 1e-13, far below the tolerances used
# (1e-6, 1e-5); in float32 (u = 6e-8) the same count (18 entries x ~10u) reaches 1e-5.
AVSIM_DTYPE = torch.float64


def _constant_features(vectors, height, width):
    """vectors [B, T, C] -> spatially constant features [B*T, C, height, width]."""
    b, t, c = vectors.shape
    return vectors.reshape(b * t, c, 1, 1).expand(b * t, c, height, width).contiguous()


def test_avsim_hand_computed():
    """T = 2, C = 2, L = 1. A = [[1, 0], [0, 1]] -> Sim(A) = I.
    Features constant per frame v_0 = [1, 0], v_1 = [1, 1]; Ŷ = sigmoid(0) = 1/2 everywhere, so
    Z_p = v_p / 2 and Sim(Z) = [[1, 1/√2], [1/√2, 1]].
    sum:  Σ_p Σ_q |Sim(A) - Sim(Z)| = 2 / √2 = √2 = 1.4142135624; mean: √2 / 4 = 0.3535533906."""
    a = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=AVSIM_DTYPE)
    feats = _constant_features(torch.tensor([[[1.0, 0.0], [1.0, 1.0]]], dtype=AVSIM_DTYPE), 2, 2)
    pred = torch.zeros(1, 2, 4, 4, dtype=AVSIM_DTYPE)
    assert avsim_loss([a], [feats], pred, "sum").item() == pytest.approx(1.4142135624, abs=1e-6)
    assert avsim_loss([a], [feats], pred, "mean").item() == pytest.approx(0.3535533906, abs=1e-6)


def _matching_case(seed=0):
    """Queries A^l_p = s_p v_p with positive s_p, spatially constant features v_p and any Ŷ:
    Z_p = v_p * mean(Downsample(Ŷ_p)) is a positive multiple of v_p, so Sim(Z) = Sim(v) = Sim(A)."""
    g = torch.Generator().manual_seed(seed)
    b, t, c = 2, 3, 5
    queries, feats = [], []
    for height, width in ((2, 2), (4, 3)):
        v = torch.randn(b, t, c, generator=g, dtype=AVSIM_DTYPE)
        scale = torch.rand(b, t, 1, generator=g, dtype=AVSIM_DTYPE) + 0.5
        queries.append((scale * v).requires_grad_())
        feats.append(_constant_features(v, height, width).requires_grad_())
    pred = torch.randn(b, t, 8, 8, generator=g, dtype=AVSIM_DTYPE).requires_grad_()
    return queries, feats, pred


def test_avsim_is_zero_when_similarities_coincide_and_positive_otherwise():
    queries, feats, pred = _matching_case()
    assert avsim_loss(queries, feats, pred).item() == pytest.approx(0.0, abs=1e-5)
    shuffled = [q[:, [1, 2, 0]] for q in queries]  # A no longer matches Z frame by frame
    assert avsim_loss(shuffled, feats, pred).item() > 0.1


def test_avsim_reductions_and_gradients():
    queries, feats, pred = _matching_case(seed=3)
    queries = [q.detach().roll(1, dims=2).requires_grad_() for q in queries]
    total = avsim_loss(queries, feats, pred, "sum")
    mean = avsim_loss(queries, feats, pred, "mean")
    layers, frames = len(queries), queries[0].shape[1]
    assert total.item() == pytest.approx(mean.item() * layers * frames * frames, rel=1e-5)
    total.backward()
    assert pred.grad is None  # Ŷ is detached
    assert all(q.grad is not None and q.grad.abs().sum() > 0 for q in queries)
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)


def _spatially_varying_case(seed=0, dtype=torch.float64):
    """Random queries, features that vary over the pixels and random mask logits: Z then depends on Ŷ."""
    g = torch.Generator().manual_seed(seed)
    b, t, c = 1, 3, 4
    queries = [torch.randn(b, t, c, generator=g, dtype=dtype).requires_grad_()]
    feats = [torch.randn(b * t, c, 2, 2, generator=g, dtype=dtype).requires_grad_()]
    pred = torch.randn(b, t, 4, 4, generator=g, dtype=dtype).requires_grad_()
    return queries, feats, pred


def test_avsim_without_detach_trains_the_mask():
    """SIM_DETACH_MASK False (eq. 8 without a stop-gradient): same value, and the gradient reaches Ŷ's logits.

    The gradient is checked against a central difference along its own direction u = g / |g|, step h = 1e-2:
    the loss is computed in float32 (|L| < 20 here, rounding <= 20 * 2^-24 ~ 1.2e-6, i.e. <= 6e-5 after
    dividing by 2h) and the truncation error is O(h^2) relative; 5% tolerance leaves a wide margin, while a
    missing or wrong gradient (e.g. the detached 0) fails."""
    queries, feats, pred = _spatially_varying_case()
    detached = avsim_loss(queries, feats, pred, "sum", detach_mask=True)
    attached = avsim_loss(queries, feats, pred, "sum", detach_mask=False)
    assert attached.item() == detached.item()
    detached.backward()
    assert pred.grad is None
    attached.backward()
    grad = pred.grad
    norm = grad.norm()
    assert norm > 1e-2
    u, h = grad / norm, 1e-2
    with torch.no_grad():
        plus = avsim_loss(queries, feats, pred + h * u, "sum", detach_mask=False)
        minus = avsim_loss(queries, feats, pred - h * u, "sum", detach_mask=False)
    assert ((plus - minus) / (2 * h)).item() == pytest.approx(norm.item(), rel=0.05)


def test_avsim_bad_inputs_raise():
    queries, feats, pred = _matching_case()
    with pytest.raises(ValueError, match="reduction"):
        avsim_loss(queries, feats, pred, "max")
    with pytest.raises(ValueError, match="one feature map per query"):
        avsim_loss(queries, feats[:1], pred)
    with pytest.raises(ValueError, match="do not match"):
        avsim_loss(queries, feats[::-1][:1] + feats[:1], pred[:1])


# ---------------------------------------------------------------- criterion, eq. (13)-(14)
def _outputs(num_layers=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, t, c = 2, 2, 4
    masks = [torch.randn(b, t, 4, 4, generator=g, requires_grad=True) for _ in range(num_layers)]
    return {
        "pred_masks": masks[-1],
        "aux_outputs": [{"pred_masks": m} for m in masks[:-1]],
        "queries": [torch.randn(b, t, c, generator=g, requires_grad=True) for _ in range(num_layers)],
        "layer_features": [torch.randn(b * t, c, 2, 2, generator=g, requires_grad=True) for _ in range(num_layers)],
    }


def _targets():
    gt = (torch.rand(2, 2, 8, 8, generator=torch.Generator().manual_seed(5)) > 0.5).to(torch.uint8)
    return gt, torch.tensor([[True, False], [True, True]])


def test_criterion_keys_and_values():
    out = _outputs()
    gt, valid = _targets()
    losses = AQFormerCriterion()(out, gt, valid)
    expected_keys = {"loss_bce", "loss_dice", "loss_bce_0", "loss_dice_0", "loss_bce_1", "loss_dice_1", "loss_sim"}
    assert set(losses) == expected_keys
    # the criterion shares one upsampling between BCE and Dice: the very same operations, so equal bitwise
    for key, masks in (("", out["pred_masks"]), ("_0", out["aux_outputs"][0]["pred_masks"]),
                       ("_1", out["aux_outputs"][1]["pred_masks"])):
        assert torch.equal(losses[f"loss_bce{key}"], sigmoid_bce_loss(masks, gt, valid))
        assert torch.equal(losses[f"loss_dice{key}"], dice_loss(masks, gt, valid))
    none_valid = AQFormerCriterion()(out, gt, torch.zeros(2, 2, dtype=torch.bool))
    assert none_valid["loss_bce"].item() == 0.0 and none_valid["loss_dice_1"].item() == 0.0
    assert none_valid["loss_bce"].requires_grad == out["pred_masks"].requires_grad
    assert losses["loss_sim"].item() == pytest.approx(
        avsim_loss(out["queries"], out["layer_features"], out["pred_masks"]).item()
    )
    # L_sim needs no ground truth: unaffected by which frames are labelled
    all_valid = AQFormerCriterion()(out, gt, torch.ones(2, 2, dtype=torch.bool))
    assert all_valid["loss_sim"].item() == losses["loss_sim"].item()


def test_criterion_weights_and_switches():
    out = _outputs()
    gt, valid = _targets()
    base = AQFormerCriterion()(out, gt, valid)
    weighted = AQFormerCriterion(bce_weight=2.0, dice_weight=0.5, sim_weight=3.0)(out, gt, valid)
    for key in base:
        kind = key.rsplit("_", 1)[0] if key[-1].isdigit() else key  # "loss_bce_0" -> "loss_bce"
        factor = {"loss_bce": 2.0, "loss_dice": 0.5, "loss_sim": 3.0}[kind]
        assert weighted[key].item() == pytest.approx(factor * base[key].item())
    last_only = AQFormerCriterion(deep_supervision=False)(out, gt, valid)
    assert set(last_only) == {"loss_bce", "loss_dice", "loss_sim"}
    no_sim_outputs = {"pred_masks": out["pred_masks"], "aux_outputs": out["aux_outputs"]}
    no_sim = AQFormerCriterion(sim_weight=0.0)(no_sim_outputs, gt, valid)
    assert "loss_sim" not in no_sim and len(no_sim) == 6
    with pytest.raises(KeyError, match="queries"):
        AQFormerCriterion()(no_sim_outputs, gt, valid)


def test_criterion_backward_reaches_every_output():
    out = _outputs()
    gt, valid = _targets()
    sum(AQFormerCriterion()(out, gt, valid).values()).backward()
    aux_masks = [a["pred_masks"] for a in out["aux_outputs"]]
    tensors = [out["pred_masks"]] + aux_masks + out["queries"] + out["layer_features"]
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in tensors)


def test_criterion_sim_detach_mask_switch():
    out = _outputs()
    gt, valid = _targets()
    for detach in (True, False):
        pred = out["pred_masks"].detach().requires_grad_()
        losses = AQFormerCriterion(sim_detach_mask=detach)({**out, "pred_masks": pred}, gt, valid)
        losses["loss_sim"].backward()
        assert (pred.grad is None) == detach


def test_criterion_bad_arguments_raise():
    with pytest.raises(ValueError, match="bce_weight"):
        AQFormerCriterion(bce_weight=-1.0)
    with pytest.raises(ValueError, match="sim_reduction"):
        AQFormerCriterion(sim_reduction="avg")
