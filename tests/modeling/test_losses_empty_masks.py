"""Every loss term on negative clips (all-empty ground truth, possibly all-empty predictions): finite values and
gradients, hand-computed values, and the AVSim rule for empty-mask frames, which leaves the loss of non-empty
masks bitwise unchanged."""
import math

import pytest
import torch
from torch.nn import functional as F

from aqformer_d2.modeling.losses import AQFormerCriterion, avsim_loss, dice_loss, sigmoid_bce_loss


def _reference_avsim(queries, layer_features, pred_masks, reduction="sum", detach_mask=True):
    """eq. (7)-(8) as computed before the empty-mask rule (every pair counted; a zero vector has similarity 0)."""
    batch, frames = pred_masks.shape[:2]
    dtype = torch.promote_types(pred_masks.dtype, torch.float32)
    probs = (pred_masks.detach() if detach_mask else pred_masks).to(dtype).sigmoid()
    per_layer = []
    for a, feat in zip(queries, layer_features):
        channels, height, width = feat.shape[1:]
        y_small = F.adaptive_avg_pool2d(probs, (height, width))
        feat = feat.to(dtype).reshape(batch, frames, channels, height, width)
        z = (feat * y_small[:, :, None]).mean(dim=(-2, -1))
        ua, uz = F.normalize(a.to(dtype), dim=-1, eps=1e-8), F.normalize(z, dim=-1, eps=1e-8)
        per_layer.append((ua @ ua.transpose(1, 2) - uz @ uz.transpose(1, 2)).abs())
    stacked = torch.stack(per_layer)
    return stacked.sum(dim=(0, 2, 3)).mean() if reduction == "sum" else stacked.mean()


def _inputs(seed, B=2, T=5, C=8, fill=None, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    queries = [torch.randn(B, T, C, generator=g, dtype=dtype, requires_grad=True) for _ in range(3)]
    feats = [torch.randn(B * T, C, s, s, generator=g, dtype=dtype, requires_grad=True) for s in (2, 4, 8)]
    pred = torch.randn(B, T, 8, 8, generator=g, dtype=dtype) * 3
    if fill is not None:
        pred = pred * 0 + fill
    return queries, feats, pred.requires_grad_()


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_avsim_of_non_empty_masks_is_bitwise_the_formula_without_the_rule(reduction, detach, seed):
    queries, feats, pred = _inputs(seed)
    new = avsim_loss(queries, feats, pred, reduction, detach_mask=detach)
    old = _reference_avsim(queries, feats, pred, reduction, detach_mask=detach)
    assert torch.equal(new, old), (new.item(), old.item())
    grads_new = torch.autograd.grad(new, queries + feats + ([] if detach else [pred]))
    grads_old = torch.autograd.grad(old, queries + feats + ([] if detach else [pred]))
    assert all(torch.equal(a, b) for a, b in zip(grads_new, grads_old))


@pytest.mark.parametrize("detach", [True, False])
def test_avsim_of_an_all_empty_prediction_is_zero_with_zero_gradients(detach):
    """sigmoid(-200) = 0 exactly in float32, so every Z^l_p = 0: no pair has a cosine, the loss is 0 (before the rule
    it was sum_l sum_p |1 - 0| = L*T on the diagonal plus the query similarities, pushing the queries apart)."""
    queries, feats, pred = _inputs(3, fill=-200.0)
    loss = avsim_loss(queries, feats, pred, "sum", detach_mask=detach)
    assert loss.item() == 0.0
    assert _reference_avsim(queries, feats, pred).item() > 3 * 5  # the old value: at least the L*T diagonal terms
    for grad in torch.autograd.grad(loss, queries + feats + [pred], allow_unused=True):
        assert grad is None or (torch.isfinite(grad).all() and not grad.any())


def test_avsim_leaves_out_exactly_the_pairs_of_an_empty_frame():
    """B = 1: with frame k's mask empty, the summed loss equals the loss of the clip without frame k (float64:
    the two sums add the same terms in another order, so they agree to ~1e-15 relative; 1e-12 is the bound)."""
    queries, feats, pred = _inputs(4, B=1, T=5, dtype=torch.float64)
    pred = pred.detach().clone()
    k = 2
    pred[:, k] = -1000.0
    keep = [t for t in range(5) if t != k]
    full = avsim_loss(queries, feats, pred, "sum")
    sub = avsim_loss([q[:, keep] for q in queries], [f[keep] for f in feats], pred[:, keep], "sum")
    assert full.item() == pytest.approx(sub.item(), rel=1e-12)
    assert full.item() > 0


def test_bce_and_dice_of_an_empty_ground_truth_hand_computed():
    """4 pixels, logit 0 (p = 1/2), empty target: BCE = ln 2; Dice = 1 - (2*0 + 1) / (sum p + 0 + 1) = 1 - 1/3 = 2/3.
    Logits -200: p = 0, BCE = log(1 + e^-200) = 0 in float64 up to 1e-87; Dice = 1 - 1/1 = 0."""
    gt = torch.zeros(1, 1, 2, 2, dtype=torch.uint8)
    half = torch.zeros(1, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    assert sigmoid_bce_loss(half, gt).item() == pytest.approx(math.log(2.0), abs=1e-15)
    assert dice_loss(half, gt).item() == pytest.approx(2.0 / 3.0, abs=1e-15)
    grad = torch.autograd.grad(dice_loss(half, gt), half)[0]
    # d/dlogit [S/(S+1)] = p(1-p) / (S+1)^2 = 0.25 / 9 per pixel
    assert torch.allclose(grad, torch.full_like(grad, 0.25 / 9.0), rtol=0, atol=1e-15)
    silent = torch.full((1, 1, 2, 2), -200.0, dtype=torch.float64)
    assert sigmoid_bce_loss(silent, gt).item() < 1e-80 and dice_loss(silent, gt).item() == 0.0


@pytest.mark.parametrize("fill", [-200.0, -20.0, 0.0, 200.0, None])
@pytest.mark.parametrize("detach", [True, False])
def test_criterion_on_an_all_empty_ground_truth_is_finite_everywhere(fill, detach):
    """A batch of negatives in float32 (what training sees): every loss term and every gradient is finite, from
    confidently silent (-200) to confidently wrong (+200) predictions, with deep supervision and AVSim."""
    queries, feats, pred = _inputs(5, fill=fill)
    aux = [{"pred_masks": (pred * 0.5).clone()} for _ in range(2)]
    outputs = {"pred_masks": pred, "aux_outputs": aux, "queries": queries, "layer_features": feats}
    gt = torch.zeros(2, 5, 32, 32, dtype=torch.uint8)
    crit = AQFormerCriterion(deep_supervision=True, sim_detach_mask=detach)
    losses = crit(outputs, gt, torch.ones(2, 5, dtype=torch.bool))
    assert set(losses) >= {"loss_bce", "loss_dice", "loss_bce_0", "loss_dice_1", "loss_sim"}
    assert all(torch.isfinite(v) for v in losses.values()), losses
    total = sum(losses.values())
    for grad in torch.autograd.grad(total, queries + feats + [pred], allow_unused=True):
        assert grad is None or torch.isfinite(grad).all()
    if fill == 200.0:  # everything predicted where nothing sounds: the mask losses are large
        assert losses["loss_bce"].item() > 100 and losses["loss_dice"].item() > 0.99
