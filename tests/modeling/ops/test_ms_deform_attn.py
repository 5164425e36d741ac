"""aqformer_d2/modeling/ops/ms_deform_attn_op.py: every variant of ``ms_deform_attn`` computes the explicit bilinear
reference, the literal reference agrees with it too, gradients agree, and the dispatch table picks the variant
it documents in each mode."""
import pytest
import torch

from aqformer_d2.modeling.ops import ms_deform_attn, ms_deform_attn_variant
from aqformer_d2.modeling.ops.deform_sampling import PointWeightedSum
from aqformer_d2.modeling.ops.reference import ms_deform_attn_reference
from tests.modeling.ops.sampling_reference import (
    SHAPES,
    VARIANT_NAMES,
    force_variant,
    reference_core,
    sampling_inputs,
    shapes_tensors,
)

def test_the_table_has_the_three_documented_variants():
    assert VARIANT_NAMES == ["rows", "grid_autograd", "grid_in_place"]


@pytest.mark.parametrize("name", VARIANT_NAMES + ["reference"])
def test_every_variant_matches_explicit_bilinear_reference_float64(name, monkeypatch):
    """Points inside, across the border (some corners outside), completely outside, far outside (1e6 widths
    away: every corner outside, and the row gather's integer conversion must not wrap) and on an exact
    pixel centre (fractions 0). Bound: each output is a sum of at most 4 * L * P = 36 terms of size
    <= max|value| ~ 4, so float64 round-off is ~36 * 2^-53 * 4 ~ 2e-14; 1e-12 leaves a 50x margin."""
    n, lq, m, d, p = 2, 9, 3, 4, 2
    spatial, starts, value, locations, weights = sampling_inputs(6, n, lq, m, d, p, low=-0.3, span=1.6)
    locations[0, 0] = 1e6  # far outside, every level and point
    locations[0, 1] = -1e6
    locations[0, 2, 0, 0, 0] = torch.tensor([1.5, -0.7], dtype=torch.float64)  # completely outside
    locations[1, 2, :, 0, :, 0] = (torch.tensor(2.0) + 0.5) / SHAPES[0][1]  # an exact pixel centre in x
    outside = ((locations < 0) | (locations > 1)).any(-1).sum()
    assert outside > 10
    if name == "reference":
        got = ms_deform_attn_reference(value, spatial, starts, locations, weights)
    else:
        force_variant(monkeypatch, name)
        got = ms_deform_attn(value, spatial, starts, locations, weights)
    want = reference_core(value, SHAPES, locations, weights)
    assert got.shape == (n, lq, m * d)
    assert (got - want).abs().max().item() < 1e-12
    assert got[0, :2].abs().max().item() == 0.0  # the far-away points contribute nothing
    assert want.abs().max().item() > 0.1  # teeth


@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_every_variant_has_the_reference_gradients_float64(name, monkeypatch):
    """Gradients of the value, the locations and the weights against autograd of the literal reference
    (grid_sample level by level). Locations drawn at random are almost surely off the pixel grid, where
    bilinear sampling is differentiable. Sums of at most a few dozen terms of size ~10: float64 round-off
    ~1e-13; asserted 1e-11 relative to the largest gradient entry."""
    n, lq, m, d, p = 2, 5, 2, 3, 3
    spatial, starts, value, locations, weights = sampling_inputs(8, n, lq, m, d, p, low=-0.2, span=1.4)
    cot = torch.randn(n, lq, m * d, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    force_variant(monkeypatch, name)
    results = []
    for fn in (ms_deform_attn, ms_deform_attn_reference):
        leaves = [t.clone().requires_grad_(True) for t in (value, locations, weights)]
        out = fn(leaves[0], spatial, starts, leaves[1], leaves[2])
        results.append((out.detach(), torch.autograd.grad(out, leaves, cot)))
    (out, grads), (want, want_grads) = results
    assert (out - want).abs().max().item() < 1e-12
    for what, g, wg in zip(("value", "locations", "weights"), grads, want_grads):
        scale = wg.abs().max().item()
        assert scale > 0.1, what  # teeth: non-trivial gradients
        assert (g - wg).abs().max().item() < 1e-11 * scale, what


def test_autograd_and_in_place_variants_sum_the_same_terms_float64(monkeypatch):
    """The two grid variants add the same products in another order: 12 terms of size <= max|value|, so
    they agree to < 1e-13; the autograd one records a graph, the in-place one runs without gradients."""
    n, lq, m, d, p = 2, 6, 2, 3, 4
    spatial, starts, value, locations, weights = sampling_inputs(5, n, lq, m, d, p, low=-0.2, span=1.4)
    force_variant(monkeypatch, "grid_in_place")
    with torch.no_grad():
        in_place = ms_deform_attn(value, spatial, starts, locations, weights)
    force_variant(monkeypatch, "grid_autograd")
    tracked = ms_deform_attn(value.clone().requires_grad_(True), spatial, starts, locations, weights)
    assert tracked.grad_fn is not None
    assert (tracked - in_place).abs().max().item() < 1e-13
    assert in_place.abs().max().item() > 0.1  # teeth: the sums are not trivially zero


def test_point_weighted_sum_forward_and_gradients_float64():
    """PointWeightedSum (the grid_autograd variant's sum over the points of a level) against autograd of
    the plain expression: the same products, summed in another order (4 terms of at most ~3.5 each: the
    float64 bound 2 * 3 * u * sum|terms| is < 1e-14; asserted 1e-13), and
    torch.autograd.gradcheck of its own backward (finite differences, float64)."""
    g = torch.Generator().manual_seed(12)
    sampled = torch.randn(3, 5, 4, 7, dtype=torch.float64, generator=g, requires_grad=True)  # [B, D, P, Lq]
    weight = torch.rand(3, 4, 7, dtype=torch.float64, generator=g, requires_grad=True)  # [B, P, Lq]
    cot = torch.randn(3, 5, 7, dtype=torch.float64, generator=g)
    got = PointWeightedSum.apply(sampled, weight)
    want = (sampled * weight[:, None]).sum(2)
    assert (got - want).abs().max().item() < 1e-13
    got_grads = torch.autograd.grad(got, (sampled, weight), cot)
    want_grads = torch.autograd.grad(want, (sampled, weight), cot)
    for a, b in zip(got_grads, want_grads):
        assert (a - b).abs().max().item() < 1e-13
        assert b.abs().max().item() > 0.1  # teeth: non-trivial gradients
    assert torch.autograd.gradcheck(PointWeightedSum.apply, (sampled, weight))
    # only one input needing a gradient: the other gradient is not computed
    (grad_w,) = torch.autograd.grad(PointWeightedSum.apply(sampled.detach(), weight), weight, cot)
    assert (grad_w - want_grads[1]).abs().max().item() < 1e-13


def _inputs_on(device: str, value_grad: bool = False, locations_grad: bool = False):
    value = torch.zeros(1, 27, 2, 3, device=device, requires_grad=value_grad)
    locations = torch.zeros(1, 4, 2, 3, 2, 2, device=device, requires_grad=locations_grad)
    weights = torch.zeros(1, 4, 2, 3, 2, device=device)
    return value, locations, weights


def test_dispatch_table(monkeypatch):
    """Which variant runs when (the table of ms_deform_attn_op's docstring). 'meta' stands for any device
    that is not the CPU (a GPU)."""
    assert ms_deform_attn_variant(*_inputs_on("cpu")) == "rows"  # CPU inference
    with torch.no_grad():
        assert ms_deform_attn_variant(*_inputs_on("cpu", value_grad=True)) == "rows"  # eval under no_grad
    assert ms_deform_attn_variant(*_inputs_on("cpu", value_grad=True)) == "grid_autograd"  # CPU training
    # the value outside autograd: embedding_bag's slow backward (for the value) is not needed
    assert ms_deform_attn_variant(*_inputs_on("cpu", locations_grad=True)) == "rows"
    assert ms_deform_attn_variant(*_inputs_on("meta")) == "grid_in_place"  # GPU inference
    assert ms_deform_attn_variant(*_inputs_on("meta", value_grad=True)) == "grid_autograd"  # GPU training
    assert ms_deform_attn_variant(*_inputs_on("meta", locations_grad=True)) == "grid_autograd"
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    assert ms_deform_attn_variant(*_inputs_on("cpu")) == "grid_in_place"  # ONNX export
    monkeypatch.undo()
    monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
    assert ms_deform_attn_variant(*_inputs_on("cpu")) == "grid_in_place"  # tracing


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the shape checks become constants, as intended
@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.trace is deprecated; the ONNX exporter uses it
def test_a_trace_records_grid_sample_not_the_row_gather():
    """What ONNX export sees: torch.jit.trace of the operator (the exporter traces the same way) records
    grid_sampler and no embedding_bag, and the traced graph reproduces the operator."""
    n, lq, m, d, p = 1, 4, 2, 3, 2
    spatial, starts, value, locations, weights = sampling_inputs(3, n, lq, m, d, p, low=0.0, span=1.0)

    def op(value, locations, weights):
        return ms_deform_attn(value, spatial, starts, locations, weights)

    with torch.no_grad():
        traced = torch.jit.trace(op, (value, locations, weights))
        graph = str(traced.graph)
        assert "grid_sampler" in graph and "embedding_bag" not in graph
        assert (traced(value, locations, weights) - op(value, locations, weights)).abs().max().item() < 1e-12


def test_rejects_inconsistent_shapes():
    spatial, starts = shapes_tensors(SHAPES)
    value = torch.randn(1, 20, 2, 3)  # 20 != 20 + 6 + 1
    locs = torch.rand(1, 2, 2, 3, 1, 2)
    with pytest.raises(ValueError, match="cover"):
        ms_deform_attn(value, spatial, starts, locs, torch.rand(1, 2, 2, 3, 1))
    value = torch.randn(1, 27, 2, 3)
    with pytest.raises(ValueError, match="level_start_index"):
        ms_deform_attn(value, spatial, torch.tensor([0, 5, 26]), locs, torch.rand(1, 2, 2, 3, 1))
    with pytest.raises(ValueError, match="attention_weights"):
        ms_deform_attn(value, spatial, starts, locs, torch.rand(1, 2, 2, 3, 2))
    with pytest.raises(ValueError, match="sampling_locations"):
        ms_deform_attn(value, spatial, starts, locs[..., 0], torch.rand(1, 2, 2, 3, 1))
