"""Multi-scale deformable attention: the core sampling against a slow explicit reference, and the module."""
import math

import pytest
import torch

from aqformer_d2.modeling.pixel_decoder.ms_deform_attn import MSDeformAttn, ms_deform_attn_core
from aqformer_d2.modeling.pixel_decoder.ms_deform_encoder import MSDeformEncoder, encoder_reference_points

SHAPES = [(4, 5), (2, 3), (1, 1)]  # non-square on purpose: an x/y swap must show up


def _shapes_tensors(shapes):
    spatial = torch.tensor(shapes, dtype=torch.long)
    areas = spatial.prod(1)
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    return spatial, starts


def _reference_bilinear(value_map, x, y):
    """value_map [H, W, D]; (x, y) normalised. Bilinear with align_corners=False and zeros outside."""
    h, w, d = value_map.shape
    px = x * w - 0.5  # continuous column coordinate, pixel centres at integers
    py = y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(d, dtype=value_map.dtype)
    for yi, wy in ((y0, 1.0 - (py - y0)), (y0 + 1, py - y0)):
        for xi, wx in ((x0, 1.0 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yi < h and 0 <= xi < w:
                out = out + wy * wx * value_map[yi, xi]
    return out


def _reference_core(value, shapes, locations, weights):
    """Loops over every sample / query / head / level / point."""
    n, _, m, d = value.shape
    _, lq, _, num_levels, num_points, _ = locations.shape
    out = torch.zeros(n, lq, m, d, dtype=value.dtype)
    start = 0
    starts = []
    for h, w in shapes:
        starts.append(start)
        start += h * w
    for b in range(n):
        for q in range(lq):
            for head in range(m):
                for lvl, (h, w) in enumerate(shapes):
                    value_map = value[b, starts[lvl]:starts[lvl] + h * w, head].reshape(h, w, d)
                    for p in range(num_points):
                        x, y = locations[b, q, head, lvl, p].tolist()
                        out[b, q, head] += weights[b, q, head, lvl, p] * _reference_bilinear(value_map, x, y)
    return out.reshape(n, lq, m * d)


def _sampling_inputs(seed, n, lq, m, d, p, low, span):
    """(spatial, starts, value [N, S, M, D], locations [N, Lq, M, L, P, 2] uniform in [low, low + span),
    weights [N, Lq, M, L, P]) in float64 over SHAPES."""
    g = torch.Generator().manual_seed(seed)
    spatial, starts = _shapes_tensors(SHAPES)
    s = int(spatial.prod(1).sum())
    value = torch.randn(n, s, m, d, dtype=torch.float64, generator=g)
    locations = torch.rand(n, lq, m, len(SHAPES), p, 2, dtype=torch.float64, generator=g) * span + low
    weights = torch.rand(n, lq, m, len(SHAPES), p, dtype=torch.float64, generator=g)
    return spatial, starts, value, locations, weights


def test_core_matches_explicit_bilinear_reference_float64():
    n, lq, m, d, p = 2, 4, 2, 3, 3
    # Locations in [-0.3, 1.3]: many corners fall outside the map and must read as zero.
    spatial, starts, value, locations, weights = _sampling_inputs(0, n, lq, m, d, p, low=-0.3, span=1.6)
    locations[0, 0, 0, 0, 0] = torch.tensor([1.5, -0.7], dtype=torch.float64)  # completely outside
    outside = ((locations < 0) | (locations > 1)).any(-1).sum()
    assert outside > 10

    got = ms_deform_attn_core(value, spatial, starts, locations, weights)
    want = _reference_core(value, SHAPES, locations, weights)
    assert got.shape == (n, lq, m * d)
    assert (got - want).abs().max().item() < 1e-8


def test_core_rejects_inconsistent_shapes():
    spatial, starts = _shapes_tensors(SHAPES)
    value = torch.randn(1, 20, 2, 3)  # 20 != 20 + 6 + 1
    locs = torch.rand(1, 2, 2, 3, 1, 2)
    with pytest.raises(ValueError, match="cover"):
        ms_deform_attn_core(value, spatial, starts, locs, torch.rand(1, 2, 2, 3, 1))
    value = torch.randn(1, 27, 2, 3)
    with pytest.raises(ValueError, match="level_start_index"):
        ms_deform_attn_core(value, spatial, torch.tensor([0, 5, 26]), locs, torch.rand(1, 2, 2, 3, 1))
    with pytest.raises(ValueError, match="attention_weights"):
        ms_deform_attn_core(value, spatial, starts, locs, torch.rand(1, 2, 2, 3, 2))


def test_default_init_directional_grid_and_uniform_weights():
    attn = MSDeformAttn(d_model=16, n_levels=2, n_heads=4, n_points=3)
    bias = attn.sampling_offsets.bias.view(4, 2, 3, 2)
    # Head 0 points along +x, head 1 along +y, head 2 along -x; point k at distance k+1.
    assert torch.allclose(bias[0, 0, :, 0], torch.tensor([1.0, 2.0, 3.0]))
    assert torch.allclose(bias[1, 1, :, 1], torch.tensor([1.0, 2.0, 3.0]))
    assert torch.allclose(bias[2, 0, :, 0], torch.tensor([-1.0, -2.0, -3.0]))
    assert torch.all(attn.sampling_offsets.weight == 0)
    assert torch.all(attn.attention_weights.weight == 0) and torch.all(attn.attention_weights.bias == 0)


def test_module_offsets_are_normalised_by_width_and_height():
    """One level, one point, offset (+1, +2) px: the query at pixel (i, j) must read pixel (i+2, j+1)."""
    torch.manual_seed(0)
    h, w, c = 5, 4, 8
    attn = MSDeformAttn(d_model=c, n_levels=1, n_heads=2, n_points=1).double()
    with torch.no_grad():
        attn.sampling_offsets.bias.copy_(torch.tensor([1.0, 2.0, 1.0, 2.0], dtype=torch.float64))
    spatial, starts = _shapes_tensors([(h, w)])
    src = torch.randn(1, h * w, c, dtype=torch.float64)
    ref = encoder_reference_points([(h, w)], src.device, src.dtype)[None, :, None, :]  # [1, HW, 1, 2]
    out = attn(src, ref, src, spatial, starts)
    values = attn.value_proj(src).view(h, w, c)
    i, j = 1, 2
    expected = attn.output_proj(values[i + 2, j + 1])
    assert torch.allclose(out[0, i * w + j], expected, atol=1e-10)
    # Reading past the bottom edge: only zero padding, so the output is output_proj(0) = its bias.
    assert torch.allclose(out[0, (h - 1) * w + j], attn.output_proj.bias, atol=1e-10)


def test_module_padding_mask_zeroes_padded_values():
    torch.manual_seed(0)
    c = 8
    attn = MSDeformAttn(d_model=c, n_levels=len(SHAPES), n_heads=2, n_points=2).double()
    with torch.no_grad():  # random (trained-like) offsets and weights so many positions are sampled
        attn.sampling_offsets.weight.normal_(0, 1.0)
        attn.attention_weights.weight.normal_(0, 1.0)
    spatial, starts = _shapes_tensors(SHAPES)
    s = int(spatial.prod(1).sum())
    query = torch.randn(2, 6, c, dtype=torch.float64)
    ref = torch.rand(2, 6, len(SHAPES), 2, dtype=torch.float64)
    src = torch.randn(2, s, c, dtype=torch.float64)
    mask = torch.zeros(2, s, dtype=torch.bool)
    mask[0, 3:9] = True
    mask[1, 20:26] = True
    out = attn(query, ref, src, spatial, starts, mask)
    perturbed = src.clone()
    perturbed[mask] += 100.0 * torch.randn(int(mask.sum()), c, dtype=torch.float64)
    assert torch.equal(attn(query, ref, perturbed, spatial, starts, mask), out)
    # Without the mask the same perturbation does change the output (the test can fail).
    assert not torch.allclose(attn(query, ref, perturbed, spatial, starts), attn(query, ref, src, spatial, starts))


def test_module_rejects_bad_input():
    with pytest.raises(ValueError, match="divisible"):
        MSDeformAttn(d_model=10, n_levels=1, n_heads=3, n_points=1)
    attn = MSDeformAttn(d_model=8, n_levels=1, n_heads=2, n_points=1)
    spatial, starts = _shapes_tensors([(2, 2)])
    with pytest.raises(ValueError, match="reference_points"):
        attn(torch.randn(1, 4, 8), torch.rand(1, 4, 1, 4), torch.randn(1, 4, 8), spatial, starts)
    with pytest.raises(ValueError, match="input_padding_mask"):
        attn(torch.randn(1, 4, 8), torch.rand(1, 4, 1, 2), torch.randn(1, 4, 8), spatial, starts,
             torch.zeros(1, 4, dtype=torch.uint8))


def test_encoder_shapes_and_reference_points():
    ref = encoder_reference_points([(2, 4)], torch.device("cpu"), torch.float32)
    assert torch.allclose(ref[1], torch.tensor([0.375, 0.25])) and torch.allclose(ref[4], torch.tensor([0.125, 0.75]))
    enc = MSDeformEncoder(2, d_model=8, dim_feedforward=16, dropout=0.0, n_levels=2, n_heads=2, n_points=2)
    src = torch.randn(3, 4 * 4 + 2 * 2, 8)
    out = enc(src, torch.randn_like(src), [(4, 4), (2, 2)])
    assert out.shape == src.shape
    with pytest.raises(ValueError, match="levels"):
        enc(src, src, [(4, 4), (2, 2), (1, 1)])


# ------------------------------------------------------------------ fast path vs Deformable DETR's formulation
def _reference_module_forward(attn, query, reference_points, input_flatten, spatial_shapes, level_start_index,
                              input_padding_mask=None):
    """MSDeformAttn as Deformable DETR writes it (and as this module computed it before the fast path):
    two separate projections, a softmax over the last axis, ``ref + offset / (W_l, H_l)`` and the
    [N, S, M, D] layout of :func:`ms_deform_attn_core`."""
    n, lq, _ = query.shape
    s = input_flatten.shape[1]
    m, lv, p = attn.n_heads, attn.n_levels, attn.n_points
    value = attn.value_proj(input_flatten)
    if input_padding_mask is not None:
        value = value.masked_fill(input_padding_mask[..., None], 0.0)
    value = value.view(n, s, m, attn.d_model // m)
    offsets = attn.sampling_offsets(query).view(n, lq, m, lv, p, 2)
    weights = attn.attention_weights(query).view(n, lq, m, lv * p).softmax(-1).view(n, lq, m, lv, p)
    normalizer = spatial_shapes.flip(-1).to(offsets.dtype)
    locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
    out = ms_deform_attn_core(value, spatial_shapes, level_start_index, locations, weights)
    return attn.output_proj(out)


def _trained_like(attn, generator):
    with torch.no_grad():  # offsets of a few pixels in every direction, peaked attention weights
        attn.sampling_offsets.weight.copy_(torch.randn(attn.sampling_offsets.weight.shape, generator=generator))
        attn.attention_weights.weight.copy_(torch.randn(attn.attention_weights.weight.shape, generator=generator))
        attn.attention_weights.bias.copy_(torch.randn(attn.attention_weights.bias.shape, generator=generator))
    return attn


@pytest.mark.parametrize("sampler", ["grid_sample", "rows"])
def test_fast_forward_is_deformable_detr_formulation_float64(sampler, monkeypatch):
    """The fused projection (offset rows pre-scaled by 2 / (W_l, H_l)), the softmax over the middle axis and
    the in-place accumulation over points compute what Deformable DETR writes, up to float64 round-off;
    so does the CPU row sampler (offsets in pixels, ``ref * (W, H) - 0.5 + offset``, one embedding_bag).

    Bound: the two forms differ only by the order of exact-real-arithmetic-equal operations (scaling a row
    before vs after the dot product, 2 * (r + o / W) - 1 vs (2 r - 1) + o * (2 / W), summing L x P = 6 terms
    in another order). Each is a few ulps of quantities of size <= ~10, so the grid differs by ~1e-15 and
    the output (|output| ~ 10, bilinear slopes ~ |value| ~ 10 per pixel, 2.5 px per grid unit) by ~1e-13:
    1e-11 has a 100x margin and is still 1e9 times smaller than any real change (see the swap below).
    """
    import aqformer_d2.modeling.pixel_decoder.ms_deform_attn as mda

    monkeypatch.setattr(mda, "use_row_sampler", lambda value: sampler == "rows")
    g = torch.Generator().manual_seed(3)
    c, heads, points = 16, 2, 3
    shapes = [(6, 9), (3, 5), (2, 2)]  # non-square: a (W, H) swap in the offset scaling must show up
    attn = _trained_like(MSDeformAttn(d_model=c, n_levels=3, n_heads=heads, n_points=points).double(), g)
    spatial, starts = _shapes_tensors(shapes)
    s = int(spatial.prod(1).sum())
    query = torch.randn(2, 7, c, dtype=torch.float64, generator=g)
    ref = torch.rand(2, 7, 3, 2, dtype=torch.float64, generator=g)
    src = torch.randn(2, s, c, dtype=torch.float64, generator=g)
    mask = torch.zeros(2, s, dtype=torch.bool)
    mask[1, 10:20] = True
    for padding in (None, mask):
        want = _reference_module_forward(attn, query, ref, src, spatial, starts, padding)
        got = attn(query, ref, src, spatial, starts, padding)
        assert (got - want).abs().max().item() < 1e-11
    # Teeth: the same comparison with H and W swapped in the reference's offset scaling is far off.
    swapped = _reference_module_forward(attn, query, ref, src, spatial.flip(-1), starts)
    assert (attn(query, ref, src, spatial, starts) - swapped).abs().max().item() > 1e-2


def test_fast_forward_gradients_match_reference_float64():
    g = torch.Generator().manual_seed(4)
    shapes = [(4, 5), (2, 3)]
    attn = _trained_like(MSDeformAttn(d_model=8, n_levels=2, n_heads=2, n_points=2).double(), g)
    spatial, starts = _shapes_tensors(shapes)
    query = torch.randn(1, 5, 8, dtype=torch.float64, generator=g)
    ref = torch.rand(1, 5, 2, 2, dtype=torch.float64, generator=g)
    src = torch.randn(1, 26, 8, dtype=torch.float64, generator=g)
    grads = []
    for fn in (attn, lambda *a: _reference_module_forward(attn, *a)):
        attn.zero_grad()
        fn(query, ref, src, spatial, starts).pow(2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in attn.parameters()]))
    assert (grads[0] - grads[1]).abs().max().item() < 1e-10 * grads[1].abs().max().item()


def test_model_output_same_before_and_after_fast_path_float32(monkeypatch):
    """The whole tiny AQFormer (random init, float32, a fixed clip): sound probabilities with the fast
    MSDeformAttn vs with Deformable DETR's formulation (what the module ran before) agree to 1e-5.

    Why 1e-5 holds on any x86-64 and thread count: the two runs execute the same kernels everywhere except
    inside MSDeformAttn, where the differences are re-associations worth a few float32 ulps (u = 6e-8) of
    the sampling grid and of the 12-term point sums, i.e. ~1e-6 relative per encoder layer. Later layers
    (LayerNorm-ed, weights ~ 1/sqrt(C)) do not amplify relative error by more than a small factor, and
    d prob / d logit <= 1/4, so the expected gap is ~1e-6 (measured 3.0e-7 on an AVX-512 machine). A real
    change, such as dropping one sampling level, moves the probabilities by > 1e-3 (asserted below).
    """
    from detectron2.modeling import build_model

    from tests.modeling.meta_arch.helpers import TINY_CONFIG, make_cfg, make_clip

    torch.manual_seed(0)
    model = build_model(make_cfg(TINY_CONFIG)).eval()
    with torch.no_grad():  # trained-like offsets and attention weights, so sampling moves off the grid
        g = torch.Generator().manual_seed(1)
        for layer in model.pixel_decoder.encoder.layers:
            _trained_like(layer.self_attn, g)
            layer.self_attn.sampling_offsets.weight.mul_(0.05)
    clip = make_clip(torch.Generator().manual_seed(2), frames=5, height=96, width=96, with_masks=False)
    with torch.no_grad():
        fast = model([clip])[0]["sound_probs"]
        monkeypatch.setattr(MSDeformAttn, "forward", _reference_module_forward)
        reference = model([clip])[0]["sound_probs"]
        gap = (fast - reference).abs().max().item()
        assert gap <= 1e-5, f"fast path vs reference formulation: max |delta prob| = {gap:.3g}"

        def drop_last_level(attn, query, ref, src, spatial, starts, mask=None):
            with torch.no_grad():
                saved = attn.attention_weights.bias.clone()
                attn.attention_weights.bias.view(attn.n_heads, attn.n_levels, attn.n_points)[:, -1] = -1e4
                try:
                    return _reference_module_forward(attn, query, ref, src, spatial, starts, mask)
                finally:
                    attn.attention_weights.bias.copy_(saved)

        monkeypatch.setattr(MSDeformAttn, "forward", drop_last_level)
        changed = model([clip])[0]["sound_probs"]
    assert (changed - reference).abs().max().item() > 1e-3


def test_autograd_path_sums_the_same_terms_as_the_in_place_path_float64():
    """sample_and_weight sums the points of a level with _PointWeightedSum when autograd records (training)
    and in place point after point otherwise (inference): the same terms, added in another order, so the two
    agree to float64 round-off (12 terms of size <= max|value|: < 1e-13 here), and the autograd path
    gives the explicit bilinear reference's gradients."""
    from aqformer_d2.modeling.pixel_decoder.ms_deform_attn import sample_and_weight

    n, lq, m, d, p = 2, 6, 2, 3, 4
    spatial, starts, value, locations, weights = _sampling_inputs(5, n, lq, m, d, p, low=-0.2, span=1.4)
    s = value.shape[1]
    g = torch.Generator().manual_seed(55)  # the cotangent below
    value_t = value.permute(0, 2, 3, 1).reshape(n * m, d, s)  # [N*M, D, S]
    grids = (2 * locations - 1).permute(0, 2, 3, 4, 1, 5).flatten(0, 1)  # [N*M, L, P, Lq, 2]
    w = weights.permute(0, 2, 3, 4, 1).flatten(0, 1)  # [N*M, L, P, Lq]
    with torch.no_grad():
        in_place = sample_and_weight(value_t, SHAPES, starts.tolist(), grids, w)
    leaf = value_t.clone().requires_grad_(True)
    tracked = sample_and_weight(leaf, SHAPES, starts.tolist(), grids, w)
    assert tracked.grad_fn is not None
    assert (tracked - in_place).abs().max().item() < 1e-13
    assert in_place.abs().max().item() > 0.1  # teeth: the sums are not trivially zero
    cot = torch.randn(tracked.shape, dtype=torch.float64, generator=g)
    (grad,) = torch.autograd.grad(tracked, leaf, cot)
    ref_leaf = value.clone().requires_grad_(True)
    ref = _reference_core(ref_leaf, SHAPES, locations, weights)  # [N, Lq, M*D]
    ref_cot = cot.view(n, m * d, lq).transpose(1, 2)  # the same cotangent in [N, Lq, M*D]
    (ref_grad,) = torch.autograd.grad(ref, ref_leaf, ref_cot)
    assert (grad - ref_grad.permute(0, 2, 3, 1).reshape(n * m, d, s)).abs().max().item() < 1e-12


def test_point_weighted_sum_forward_and_gradients_float64():
    """_PointWeightedSum (the training path's weighted sum over the points of a level) against autograd of
    the plain expression: the same products, summed in another order (4 terms of at most ~3.5 each: the
    float64 bound 2 * 3 * u * sum|terms| is < 1e-14; asserted 1e-13), and
    torch.autograd.gradcheck of its own backward (finite differences, float64)."""
    from aqformer_d2.modeling.pixel_decoder.ms_deform_attn import _PointWeightedSum

    g = torch.Generator().manual_seed(12)
    sampled = torch.randn(3, 5, 4, 7, dtype=torch.float64, generator=g, requires_grad=True)  # [B, D, P, Lq]
    weight = torch.rand(3, 4, 7, dtype=torch.float64, generator=g, requires_grad=True)  # [B, P, Lq]
    cot = torch.randn(3, 5, 7, dtype=torch.float64, generator=g)
    got = _PointWeightedSum.apply(sampled, weight)
    want = (sampled * weight[:, None]).sum(2)
    assert (got - want).abs().max().item() < 1e-13
    got_grads = torch.autograd.grad(got, (sampled, weight), cot)
    want_grads = torch.autograd.grad(want, (sampled, weight), cot)
    for a, b in zip(got_grads, want_grads):
        assert (a - b).abs().max().item() < 1e-13
        assert b.abs().max().item() > 0.1  # teeth: non-trivial gradients
    assert torch.autograd.gradcheck(_PointWeightedSum.apply, (sampled, weight))
    # only one input needing a gradient: the other gradient is not computed
    (grad_w,) = torch.autograd.grad(_PointWeightedSum.apply(sampled.detach(), weight), weight, cot)
    assert (grad_w - want_grads[1]).abs().max().item() < 1e-13


def test_row_sampler_matches_explicit_bilinear_reference_float64():
    """sample_rows_and_weight against the explicit bilinear reference: points inside, across the border
    (some corners outside), far outside (up to 1e6 pixels away: every corner outside, and the integer
    conversion must not wrap), and on exact pixel centres (fractions 0)."""
    from aqformer_d2.modeling.pixel_decoder.ms_deform_attn import sample_rows_and_weight

    n, lq, m, d, p = 2, 9, 3, 4, 2
    spatial, starts, value, locations, weights = _sampling_inputs(6, n, lq, m, d, p, low=-0.3, span=1.6)
    locations[0, 0] = 1e6  # far outside, every level and point
    locations[0, 1] = -1e6
    locations[1, 2, :, 0, :, 0] = (torch.tensor(2.0) + 0.5) / SHAPES[0][1]  # an exact pixel centre in x
    size = torch.tensor([[w, h] for h, w in SHAPES], dtype=torch.float64)  # [L, 2]
    pixels = (locations * size[:, None, :] - 0.5).flatten(3, 4)  # [N, Lq, M, L*P, 2]
    got = sample_rows_and_weight(value, SHAPES, starts.tolist(), pixels[..., 0], pixels[..., 1],
                                 weights.flatten(3, 4))
    want = _reference_core(value, SHAPES, locations, weights)
    assert got.shape == (n, lq, m * d)
    assert (got - want).abs().max().item() < 1e-12
    assert got[0, :2].abs().max().item() == 0.0  # the far-away points contribute nothing
    assert want.abs().max().item() > 0.1  # teeth


def test_row_sampler_runs_at_cpu_inference_and_grid_sample_under_autograd():
    from torch.profiler import ProfilerActivity, profile

    g = torch.Generator().manual_seed(7)
    attn = _trained_like(MSDeformAttn(d_model=8, n_levels=2, n_heads=2, n_points=2), g)
    spatial, starts = _shapes_tensors([(4, 5), (2, 3)])
    query, src = torch.randn(1, 26, 8, generator=g), torch.randn(1, 26, 8, generator=g)
    ref = torch.rand(1, 26, 2, 2, generator=g)

    def ops(grad: bool):
        with torch.set_grad_enabled(grad), profile(activities=[ProfilerActivity.CPU]) as prof:
            attn(query, ref, src, spatial, starts)
        return {e.key for e in prof.key_averages()}

    assert any("embedding_bag" in k for k in ops(False)) and not any("grid_sampler" in k for k in ops(False))
    assert any("grid_sampler" in k for k in ops(True)) and not any("embedding_bag" in k for k in ops(True))
