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


def test_core_matches_explicit_bilinear_reference_float64():
    g = torch.Generator().manual_seed(0)
    n, lq, m, d, p = 2, 4, 2, 3, 3
    spatial, starts = _shapes_tensors(SHAPES)
    s = int(spatial.prod(1).sum())
    value = torch.randn(n, s, m, d, dtype=torch.float64, generator=g)
    # Locations in [-0.3, 1.3]: many corners fall outside the map and must read as zero.
    locations = torch.rand(n, lq, m, len(SHAPES), p, 2, dtype=torch.float64, generator=g) * 1.6 - 0.3
    locations[0, 0, 0, 0, 0] = torch.tensor([1.5, -0.7], dtype=torch.float64)  # completely outside
    weights = torch.rand(n, lq, m, len(SHAPES), p, dtype=torch.float64, generator=g)
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
