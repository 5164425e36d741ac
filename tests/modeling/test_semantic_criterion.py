"""The AVSS losses: padded / unlabelled frames, ignored pixels, empty batches, and the values against a literal
implementation of the definitions in aqformer_d2/modeling/semantic_criterion.py."""
import itertools

import pytest
import torch
from torch.nn import functional as F

from aqformer_d2.modeling.semantic_criterion import AQSemanticCriterion, avsim_of_items, object_features

B, T, N, K, S, C = 2, 3, 4, 3, 8, 6


def _criterion(**kw):
    args = dict(num_classes=K, class_weight=2.0, mask_weight=5.0, dice_weight=5.0, no_object_weight=0.1,
                cost_class=2.0, cost_mask=5.0, cost_dice=5.0, sim_weight=1.0, sim_queries="matched",
                deep_supervision=True, ignore_value=255)
    args.update(kw)
    return AQSemanticCriterion(**args)


def _outputs(seed=0, dtype=torch.float64):
    """A decoder output dict with 2 layers; mask logits at the label size (S x S: upsampling is the identity)."""
    g = torch.Generator().manual_seed(seed)

    def leaf(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=dtype)).requires_grad_()

    layers = [(leaf(B, T, N, K + 1), leaf(B, T, N, S, S, scale=3.0)) for _ in range(2)]
    return {
        "pred_logits": layers[1][0], "pred_masks": layers[1][1],
        "aux_outputs": [{"pred_logits": layers[0][0], "pred_masks": layers[0][1]}],
        "queries": [leaf(B, T, N, C) for _ in range(2)],
        "layer_features": [leaf(B * T, C, 4, 4) for _ in range(2)],
    }


def _labels(seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(B, T, S, S, dtype=torch.int64)  # background everywhere
    for b, t in itertools.product(range(B), range(T)):
        c = int(torch.randint(1, K, (1,), generator=g))
        labels[b, t, 2:6, 1 + t:5 + t] = c  # one object per frame
    return labels


def _leaves(outputs):
    out = [outputs["pred_logits"], outputs["pred_masks"]]
    out += [outputs["aux_outputs"][0]["pred_logits"], outputs["aux_outputs"][0]["pred_masks"]]
    return out + outputs["queries"] + outputs["layer_features"]


def _total(losses):
    return sum(losses.values())


def test_padded_and_unlabelled_frames_contribute_nothing():
    mask_valid = torch.ones(B, T, dtype=torch.bool)
    frame_valid = torch.ones(B, T, dtype=torch.bool)
    mask_valid[0, 1] = False  # a real frame without labels
    frame_valid[1, 2] = mask_valid[1, 2] = False  # a padded frame
    labels = _labels()
    labels[0, 1] = 255
    labels[1, 2] = 0  # the official loader labels padded frames background; frame_valid must still exclude it
    crit = _criterion()
    outputs = _outputs()
    losses = crit(outputs, labels, mask_valid, frame_valid)
    _total(losses).backward()
    for leaf in _leaves(outputs)[:4] + outputs["queries"]:
        assert leaf.grad[0, 1].abs().max() == 0 and leaf.grad[1, 2].abs().max() == 0
        assert leaf.grad[0, 0].abs().max() > 0
    for feat in outputs["layer_features"]:  # [B*T, ...]: frames b*T + t
        assert feat.grad[0 * T + 1].abs().max() == 0 and feat.grad[1 * T + 2].abs().max() == 0
    # and their values do not matter
    perturbed = _outputs()
    with torch.no_grad():
        for leaf in _leaves(perturbed)[:4] + perturbed["queries"]:
            leaf[0, 1] += 5.0
            leaf[1, 2] -= 5.0
    again = crit(perturbed, labels, mask_valid, frame_valid)
    for name in losses:
        assert again[name].item() == losses[name].item(), name


def test_no_supervised_frame_gives_finite_zero_losses():
    outputs = _outputs()
    valid = torch.zeros(B, T, dtype=torch.bool)
    losses = _criterion()(outputs, _labels(), valid, torch.ones(B, T, dtype=torch.bool))
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_mask_0", "loss_dice_0", "loss_sim"}
    for name, value in losses.items():
        assert torch.isfinite(value) and value.item() == 0.0, name
    _total(losses).backward()
    for leaf in _leaves(outputs):
        assert leaf.grad is None or torch.isfinite(leaf.grad).all() and leaf.grad.abs().max() == 0


def test_a_fully_ignored_frame_counts_as_unlabelled():
    labels = _labels()
    labels[1, 0] = 255
    flags = torch.ones(B, T, dtype=torch.bool)
    unlabelled = flags.clone()
    unlabelled[1, 0] = False
    crit = _criterion()
    a = crit(_outputs(), labels, flags, flags)
    b = crit(_outputs(), labels, unlabelled, flags)
    for name in a:
        assert torch.isfinite(a[name]) and a[name].item() == b[name].item(), name


def test_ignored_pixels_do_not_count():
    labels = _labels()
    labels[:, :, 5:] = 255  # bottom rows unsupervised
    flags = torch.ones(B, T, dtype=torch.bool)
    crit = _criterion(sim_weight=0.0)
    base = crit(_outputs(), labels, flags, flags)
    perturbed = _outputs()
    with torch.no_grad():
        perturbed["pred_masks"][..., 5:, :] += 7.0
        perturbed["aux_outputs"][0]["pred_masks"][..., 5:, :] -= 7.0
    again = crit(perturbed, labels, flags, flags)
    for name in base:
        torch.testing.assert_close(again[name], base[name], rtol=1e-12, atol=0)


def _literal_layer_losses(logits, masks, labels, valid_px):
    """One frame, float64: brute-force matching, then the losses as defined (num_masks = targets of the frame)."""
    classes = [c for c in range(K) if (labels == c).any()]
    targets = [(labels == c).double() for c in classes]
    w = valid_px.double()
    probs = logits.softmax(-1)

    def pair(i, j):
        x, y = masks[i], targets[j]
        bce = (F.binary_cross_entropy_with_logits(x, y, reduction="none") * w).sum() / w.sum()
        s = x.sigmoid()
        dice = 1 - (2 * (s * y * w).sum() + 1) / ((s * w).sum() + (y * w).sum() + 1)
        return bce, dice, -probs[i, classes[j]]

    best = min(itertools.permutations(range(N), len(classes)),
               key=lambda qs: sum((5 * pair(q, j)[0] + 5 * pair(q, j)[1] + 2 * pair(q, j)[2]).item()
                                  for j, q in enumerate(qs)))
    target_class = torch.full((N,), K)
    for j, q in enumerate(best):
        target_class[q] = classes[j]
    weights = torch.ones(K + 1, dtype=torch.float64)
    weights[K] = 0.1
    ce = F.cross_entropy(logits, target_class, weight=weights)
    bce = sum(pair(q, j)[0] for j, q in enumerate(best)) / len(classes)
    dice = sum(pair(q, j)[1] for j, q in enumerate(best)) / len(classes)
    return {"loss_ce": 2 * ce, "loss_mask": 5 * bce, "loss_dice": 5 * dice}


@pytest.mark.parametrize("seed", range(3))
def test_losses_match_the_definition(seed):
    labels = _labels(seed)
    labels[:, :, 0, :] = 255
    mask_valid = torch.zeros(B, T, dtype=torch.bool)
    mask_valid[1, 2] = True  # one supervised frame: the literal version needs no batching
    outputs = _outputs(seed)
    got = _criterion(sim_weight=0.0, deep_supervision=False)(outputs, labels, mask_valid, torch.ones_like(mask_valid))
    want = _literal_layer_losses(outputs["pred_logits"][1, 2].detach(), outputs["pred_masks"][1, 2].detach(),
                                 labels[1, 2], labels[1, 2] != 255)
    assert set(got) == set(want)
    for name in want:  # float64; a few hundred terms: round-off far below 1e-10
        torch.testing.assert_close(got[name].detach(), want[name], rtol=0, atol=1e-10)


def test_avsim_pieces_match_the_equations():
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(5, C, 4, 4, generator=g, dtype=torch.float64)
    frame_index = torch.tensor([0, 0, 3, 4])
    soft = torch.rand(4, 8, 8, generator=g, dtype=torch.float64)
    z = object_features(feats, frame_index, soft)
    for i, f in enumerate(frame_index.tolist()):
        down = soft[i].reshape(4, 2, 4, 2).mean(dim=(1, 3))  # area downsampling 8x8 -> 4x4
        torch.testing.assert_close(z[i], (feats[f] * down).mean(dim=(-2, -1)), rtol=0, atol=1e-12)
    a = torch.randn(4, C, generator=g, dtype=torch.float64)
    group = torch.tensor([0, 0, 1, 1])
    total, pairs = 0.0, 0
    for i, j in itertools.product(range(4), range(4)):
        if group[i] == group[j]:
            total += abs(F.cosine_similarity(a[i], a[j], dim=0) - F.cosine_similarity(z[i], z[j], dim=0)).item()
            pairs += 1
    assert avsim_of_items(a, z, group).item() == pytest.approx(total / pairs, abs=1e-12)


@pytest.mark.parametrize("items", ["matched", "frame_mean"])
def test_avsim_ignores_padded_frames(items):
    labels = _labels()
    flags = torch.ones(B, T, dtype=torch.bool)
    frame_valid = flags.clone()
    frame_valid[0, 2] = False
    mask_valid = frame_valid.clone()
    crit = _criterion(sim_queries=items)
    base = crit(_outputs(), labels, mask_valid, frame_valid)["loss_sim"]
    assert torch.isfinite(base) and base.item() > 0
    perturbed = _outputs()
    with torch.no_grad():
        perturbed["pred_masks"][0, 2] += 3.0
        perturbed["pred_logits"][0, 2] += torch.arange(K + 1, dtype=torch.float64)
        for q in perturbed["queries"]:
            q[0, 2] *= -2.0
    assert crit(perturbed, labels, mask_valid, frame_valid)["loss_sim"].item() == base.item()
