"""An explicit bilinear reference of multi-scale deformable attention's sampling (loops over every sample,
query, head, level and point), random inputs for it, and a way to force one variant of the operator; shared
by the operator's and the module's tests."""
import dataclasses
import math

import torch

from aqformer_d2.modeling.ops import ms_deform_attn_op

SHAPES = [(4, 5), (2, 3), (1, 1)]  # non-square on purpose: an x/y swap must show up


def shapes_tensors(shapes):
    spatial = torch.tensor(shapes, dtype=torch.long)
    areas = spatial.prod(1)
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    return spatial, starts


def reference_bilinear(value_map, x, y):
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


def reference_core(value, shapes, locations, weights):
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
                        out[b, q, head] += weights[b, q, head, lvl, p] * reference_bilinear(value_map, x, y)
    return out.reshape(n, lq, m * d)


def sampling_inputs(seed, n, lq, m, d, p, low, span):
    """(spatial, starts, value [N, S, M, D], locations [N, Lq, M, L, P, 2] uniform in [low, low + span),
    weights [N, Lq, M, L, P]) in float64 over SHAPES."""
    g = torch.Generator().manual_seed(seed)
    spatial, starts = shapes_tensors(SHAPES)
    s = int(spatial.prod(1).sum())
    value = torch.randn(n, s, m, d, dtype=torch.float64, generator=g)
    locations = torch.rand(n, lq, m, len(SHAPES), p, 2, dtype=torch.float64, generator=g) * span + low
    weights = torch.rand(n, lq, m, len(SHAPES), p, dtype=torch.float64, generator=g)
    return spatial, starts, value, locations, weights


TABLE = ms_deform_attn_op.VARIANTS
VARIANT_NAMES = [variant.name for variant in TABLE]


def force_variant(monkeypatch, name: str) -> None:
    """Make ``ms_deform_attn`` run the named variant whatever the mode."""
    (chosen,) = [variant for variant in TABLE if variant.name == name]
    monkeypatch.setattr(ms_deform_attn_op, "VARIANTS", (dataclasses.replace(chosen, applies=lambda *inputs: True),))
