"""The per-frame Hungarian matcher of the AVSS head against definitions written out literally."""
import itertools

import pytest
import torch
from torch.nn import functional as F

from aqformer_d2.modeling.semantic_matcher import frame_targets, match_frame, matching_cost


def _literal_cost(class_logits, mask_logits, classes, masks, weight, wc, wm, wd):
    """The module docstring's C_ij, one pair at a time, in float64."""
    n, m = class_logits.shape[0], classes.numel()
    cost = torch.zeros(n, m, dtype=torch.float64)
    probs = class_logits.double().softmax(-1)
    for i in range(n):
        x = mask_logits[i].double()
        s = x.sigmoid()
        for j in range(m):
            y = masks[j].double()
            w = weight.double()
            bce = (F.binary_cross_entropy_with_logits(x, y, reduction="none") * w).sum() / w.sum()
            dice = 1 - (2 * (s * y * w).sum() + 1) / ((s * w).sum() + (y * w).sum() + 1)
            cost[i, j] = -wc * probs[i, classes[j]] + wm * bce + wd * dice
    return cost


def _inputs(seed, n=5, m=3, k=6, p=40):
    g = torch.Generator().manual_seed(seed)
    class_logits = torch.randn(n, k + 1, generator=g, dtype=torch.float64)
    mask_logits = 3 * torch.randn(n, p, generator=g, dtype=torch.float64)
    classes = torch.randperm(k, generator=g)[:m].sort().values
    masks = torch.rand(m, p, generator=g) > 0.5
    weight = (torch.rand(p, generator=g) > 0.25).double()  # a quarter of the pixels ignored
    return class_logits, mask_logits, classes, masks, weight


@pytest.mark.parametrize("seed", range(4))
def test_cost_matches_its_definition(seed):
    args = _inputs(seed)
    got = matching_cost(*args, 2.0, 5.0, 5.0)
    want = _literal_cost(*args, 2.0, 5.0, 5.0)
    # float64 throughout: sums of <= 40 terms of size O(10) differ by <= ~1e-13 from any other order
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_ignored_pixels_do_not_count():
    class_logits, mask_logits, classes, masks, weight = _inputs(7)
    base = matching_cost(class_logits, mask_logits, classes, masks, weight, 2.0, 5.0, 5.0)
    ignored = weight == 0
    mask_logits2, masks2 = mask_logits.clone(), masks.clone()
    mask_logits2[:, ignored] = 50.0 * torch.randn(int(ignored.sum()), dtype=torch.float64)
    masks2[:, ignored] = ~masks2[:, ignored]
    torch.testing.assert_close(matching_cost(class_logits, mask_logits2, classes, masks2, weight, 2.0, 5.0, 5.0), base)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n,m", [(4, 3), (5, 5), (3, 1)])
def test_assignment_is_optimal_against_brute_force(seed, n, m):
    g = torch.Generator().manual_seed(seed)
    cost = torch.randn(n, m, generator=g, dtype=torch.float64)
    rows, cols = match_frame(cost)
    assert rows.tolist() == sorted(rows.tolist()) and len(set(rows.tolist())) == m and len(set(cols.tolist())) == m
    got = cost[rows, cols].sum().item()
    # every injective map targets -> queries
    best = min(sum(cost[q, j].item() for j, q in enumerate(perm)) for perm in itertools.permutations(range(n), m))
    assert got == pytest.approx(best, abs=1e-12)


def test_full_pipeline_picks_the_obvious_queries():
    """Query i predicts class c_i with mask y_i exactly (large logits); the matching pairs them."""
    k, p = 5, 64
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (8, 8), generator=g)  # classes 0..2 present
    labels[0, 0] = 255
    classes, masks = frame_targets(labels, 255, k)
    assert classes.tolist() == [0, 1, 2] and masks.shape == (3, 8, 8) and not masks[:, 0, 0].any()
    order = [2, 0, 1, 3]  # query 0 -> class 2, query 1 -> class 0, query 2 -> class 1, query 3 -> nothing
    class_logits = torch.full((4, k + 1), -10.0)
    mask_logits = torch.full((4, p), -10.0)
    for q, c in enumerate(order[:3]):
        class_logits[q, c] = 10.0
        mask_logits[q] = 20.0 * masks[c].flatten().float() - 10.0
    class_logits[3, k] = 10.0
    weight = (labels != 255).flatten().float()
    rows, cols = match_frame(matching_cost(class_logits, mask_logits, classes, masks.flatten(1), weight, 2, 5, 5))
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 2, 1: 0, 2: 1}


def test_bad_labels_and_costs_raise():
    with pytest.raises(ValueError, match="outside 0..4"):
        frame_targets(torch.tensor([[0, 7]]), 255, 5)
    with pytest.raises(ValueError, match="non-finite"):
        match_frame(torch.tensor([[0.0, float("nan")]]))
