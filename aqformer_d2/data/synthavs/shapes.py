"""SynthAVS visual side: category shapes, textures and backgrounds, drawn with vectorised numpy.

Every category is a distinct shape with its own colour pair and texture pattern. Shapes are
defined in object-local coordinates ``(u, v)`` scaled by the object radius, so every shape fits
inside the unit disc; an object is rasterised by evaluating the shape's inside test on the pixel
centres of its bounding box (no per-pixel Python loops).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import numpy as np

__all__ = [
    "CATEGORY_VISUALS",
    "SHAPE_FUNCTIONS",
    "CategoryVisual",
    "object_bbox",
    "shape_inside",
    "texture_rgb",
    "render_background",
]

ShapeFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _polar(u: np.ndarray, v: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    return np.sqrt(u * u + v * v), np.arctan2(v, u)


def _regular_polygon(n: int, circumradius: float = 1.0) -> ShapeFn:
    """Inside test of a regular n-gon (one vertex pointing up, -v direction)."""
    sector = 2.0 * np.pi / n
    apothem = circumradius * np.cos(np.pi / n)

    def inside(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        r, theta = _polar(u, v)
        # Rotate so a vertex sits at theta = -pi/2 (top of the image), then fold into one sector.
        local = np.mod(theta + np.pi / 2.0, sector) - sector / 2.0
        return r * np.cos(local) < apothem

    return inside


def _disc(u, v):
    return u * u + v * v < 0.92 ** 2


def _square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) < 0.68


def _ring(u, v):
    r2 = u * u + v * v
    return (r2 < 0.95 ** 2) & (r2 > 0.55 ** 2)


def _star(u, v):
    r, theta = _polar(u, v)
    sector = 2.0 * np.pi / 5.0
    # Distance (in angle) to the nearest of the 5 vertices, one of them pointing up.
    local = np.abs(np.mod(theta + np.pi / 2.0, sector) - sector / 2.0) / (sector / 2.0)  # 0 at a vertex, 1 between
    inner, outer = 0.42, 0.98
    return r < outer - (outer - inner) * local


def _cross(u, v):
    au, av = np.abs(u), np.abs(v)
    return ((au < 0.28) & (av < 0.9)) | ((av < 0.28) & (au < 0.9))


def _ellipse(u, v):
    return (u / 0.95) ** 2 + (v / 0.5) ** 2 < 1.0


def _diamond(u, v):
    return np.abs(u) / 0.6 + np.abs(v) / 0.97 < 1.0


def _crescent(u, v):
    return (u * u + v * v < 0.92 ** 2) & ((u - 0.42) ** 2 + (v + 0.1) ** 2 > 0.72 ** 2)


def _heart(u, v):
    # Classic implicit heart (x^2 + y^2 - 1)^3 - x^2 y^3 < 0, y pointing up, scaled into the unit disc.
    x = u * 1.25
    y = -v * 1.25 + 0.15
    return (x * x + y * y - 1.0) ** 3 - x * x * y ** 3 < 0.0


def _bowtie(u, v):
    au, av = np.abs(u), np.abs(v)
    return (au < 0.85) & (av < 0.25 + 0.7 * au) & (av < 0.75)


SHAPE_FUNCTIONS: Dict[str, ShapeFn] = {
    "disc": _disc,
    "square": _square,
    "triangle": _regular_polygon(3, 0.98),
    "ring": _ring,
    "star": _star,
    "cross": _cross,
    "ellipse": _ellipse,
    "diamond": _diamond,
    "hexagon": _regular_polygon(6, 0.9),
    "crescent": _crescent,
    "heart": _heart,
    "bowtie": _bowtie,
}


@dataclass(frozen=True)
class CategoryVisual:
    """Appearance of one category: shape name, two RGB colours and a texture pattern."""

    shape: str
    primary: Tuple[int, int, int]
    secondary: Tuple[int, int, int]
    pattern: str  # "stripes" | "dots" | "checker" | "rings" | "solid"
    pattern_angle: float  # radians, orientation of stripes / checker in object coordinates
    pattern_freq: float  # cycles per object radius


# Category order is fixed: category id i uses CATEGORY_VISUALS[i] and sounds.CATEGORY_SOUNDS[i].
CATEGORY_VISUALS: Tuple[CategoryVisual, ...] = (
    CategoryVisual("disc", (225, 45, 40), (255, 200, 60), "stripes", 0.0, 2.2),
    CategoryVisual("square", (40, 90, 230), (230, 235, 255), "dots", 0.0, 2.0),
    CategoryVisual("triangle", (40, 185, 70), (10, 80, 25), "solid", 0.0, 0.0),
    CategoryVisual("ring", (250, 140, 20), (120, 50, 0), "checker", 0.4, 2.5),
    CategoryVisual("star", (250, 225, 30), (200, 120, 0), "rings", 0.0, 2.5),
    CategoryVisual("cross", (150, 50, 210), (240, 200, 255), "stripes", np.pi / 4, 2.0),
    CategoryVisual("ellipse", (30, 200, 215), (0, 70, 110), "dots", 0.0, 2.2),
    CategoryVisual("diamond", (230, 50, 170), (255, 255, 255), "checker", 0.0, 2.0),
    CategoryVisual("hexagon", (160, 230, 40), (60, 110, 0), "rings", 0.0, 2.0),
    CategoryVisual("crescent", (240, 240, 235), (140, 140, 160), "stripes", np.pi / 2, 2.5),
    CategoryVisual("heart", (255, 130, 170), (170, 20, 60), "dots", 0.0, 2.4),
    CategoryVisual("bowtie", (20, 140, 130), (230, 250, 200), "checker", np.pi / 4, 2.2),
)


def object_bbox(cx: float, cy: float, radius: float, height: int, width: int) -> Tuple[int, int, int, int]:
    """Pixel box ``(y0, y1, x0, x1)`` (end exclusive) that contains the object, clipped to the image."""
    pad = radius + 1.0
    y0 = max(int(np.floor(cy - pad)), 0)
    y1 = min(int(np.ceil(cy + pad)) + 1, height)
    x0 = max(int(np.floor(cx - pad)), 0)
    x1 = min(int(np.ceil(cx + pad)) + 1, width)
    return y0, y1, x0, x1


def _local_coords(cx, cy, radius, angle, box) -> Tuple[np.ndarray, np.ndarray]:
    y0, y1, x0, x1 = box
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u = (c * xs + s * ys) / radius
    v = (-s * xs + c * ys) / radius
    return u, v


def shape_inside(shape: str, cx: float, cy: float, radius: float, angle: float, box) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rasterise one object inside its bounding box.

    Returns ``(inside, u, v)``: a bool array of the box size and the object-local coordinates
    (used by :func:`texture_rgb`).
    """
    u, v = _local_coords(cx, cy, radius, angle, box)
    return SHAPE_FUNCTIONS[shape](u, v), u, v


def texture_rgb(visual: CategoryVisual, u: np.ndarray, v: np.ndarray, primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Textured colour ``[h, w, 3]`` float32 of an object at object-local coordinates (u, v)."""
    ca, sa = np.cos(visual.pattern_angle), np.sin(visual.pattern_angle)
    pu = ca * u + sa * v
    pv = -sa * u + ca * v
    f = visual.pattern_freq
    if visual.pattern == "stripes":
        m = (np.sin(2.0 * np.pi * f * pu) > 0.0).astype(np.float32)
    elif visual.pattern == "dots":
        fu = np.mod(pu * f, 1.0) - 0.5
        fv = np.mod(pv * f, 1.0) - 0.5
        m = (fu * fu + fv * fv < 0.09).astype(np.float32)
    elif visual.pattern == "checker":
        m = np.mod(np.floor(pu * f) + np.floor(pv * f), 2.0).astype(np.float32)
    elif visual.pattern == "rings":
        m = (np.sin(2.0 * np.pi * f * np.sqrt(u * u + v * v)) > 0.0).astype(np.float32)
    elif visual.pattern == "solid":
        # Smooth light-to-dark gradient across the object instead of a pattern.
        m = np.clip(0.5 + 0.5 * pv, 0.0, 1.0).astype(np.float32) * 0.6
    else:
        raise ValueError(f"unknown texture pattern {visual.pattern!r}")
    m = m[..., None]
    rgb = primary[None, None, :] * (1.0 - m) + secondary[None, None, :] * m
    # Mild radial shading so objects look like objects, not flat stickers.
    shade = 1.0 - 0.18 * np.clip(u * u + v * v, 0.0, 1.0)
    return rgb * shade[..., None]


def _upsample_bilinear(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of a small ``[h, w, C]`` grid to ``[height, width, C]`` (corners aligned)."""
    gh, gw = grid.shape[:2]
    ys = np.linspace(0.0, gh - 1.0, height, dtype=np.float32)
    xs = np.linspace(0.0, gw - 1.0, width, dtype=np.float32)
    y0 = np.clip(np.floor(ys).astype(np.int64), 0, gh - 2)
    x0 = np.clip(np.floor(xs).astype(np.int64), 0, gw - 2)
    wy = (ys - y0)[:, None, None]
    wx = (xs - x0)[None, :, None]
    g00 = grid[y0][:, x0]
    g01 = grid[y0][:, x0 + 1]
    g10 = grid[y0 + 1][:, x0]
    g11 = grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - wy) * (1 - wx) + g01 * (1 - wy) * wx + g10 * wy * (1 - wx) + g11 * wy * wx).astype(np.float32)


def render_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured background ``[height, width, 3]`` float32 in [0, 255].

    Sum of a two-colour linear gradient, multi-octave value noise and a few soft colour blobs;
    colours are kept muted so that objects are distinguishable but not trivially segmented.
    """
    # Gradient between two muted colours along a random direction.
    c0 = rng.uniform(40, 190, size=3).astype(np.float32)
    c1 = rng.uniform(40, 190, size=3).astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    ys = (np.arange(height, dtype=np.float32)[:, None] + 0.5) / height - 0.5
    xs = (np.arange(width, dtype=np.float32)[None, :] + 0.5) / width - 0.5
    proj = np.clip(np.cos(ang) * xs + np.sin(ang) * ys + 0.5, 0.0, 1.0)[..., None]
    img = c0 * (1.0 - proj) + c1 * proj

    # Multi-octave value noise (coloured at coarse scales, grey grain at the finest).
    for cells, amp, coloured in ((4, 35.0, True), (9, 22.0, True), (max(4, min(height, width) // 6), 14.0, False)):
        channels = 3 if coloured else 1
        grid = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1, channels)).astype(np.float32)
        img = img + amp * _upsample_bilinear(grid, height, width)

    # Soft blobs of random colours.
    n_blobs = int(rng.integers(3, 8))
    yy = np.arange(height, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(width, dtype=np.float32)[None, :] + 0.5
    for _ in range(n_blobs):
        by, bx = rng.uniform(0, height), rng.uniform(0, width)
        sigma = rng.uniform(0.06, 0.22) * min(height, width)
        colour = rng.uniform(20, 235, size=3).astype(np.float32)
        alpha = rng.uniform(0.25, 0.6)
        w = (alpha * np.exp(-((yy - by) ** 2 + (xx - bx) ** 2) / (2.0 * sigma * sigma)))[..., None].astype(np.float32)
        img = img * (1.0 - w) + colour * w
    return np.clip(img, 0.0, 255.0).astype(np.float32)
