"""Pictures a person can check: mask overlays and training-loss curves (PNG)."""
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["overlay_mask", "overlay_classes", "clip_overlay_grid", "save_loss_curve"]

PRED_COLOR = (255, 40, 40)
GT_COLOR = (40, 220, 40)


def overlay_mask(frame: np.ndarray, mask: np.ndarray, color: Tuple[int, int, int], alpha: float = 0.5) -> np.ndarray:
    """Blend ``color`` into ``frame`` where ``mask`` is set.

    Args:
        frame: uint8 [H, W, 3] RGB.
        mask: bool or {0, 1} [H, W], same size as the frame.
        color: RGB colour of the mask.
        alpha: opacity of the colour inside the mask.
    Returns:
        uint8 [H, W, 3].
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"overlay_mask: frame must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
    if mask.shape != frame.shape[:2]:
        raise ValueError(f"overlay_mask: mask {mask.shape} does not match frame {frame.shape[:2]}")
    out = frame.astype(np.float32)
    sel = mask.astype(bool)
    out[sel] = (1.0 - alpha) * out[sel] + alpha * np.asarray(color, dtype=np.float32)
    return out.round().clip(0, 255).astype(np.uint8)


def overlay_classes(frame: np.ndarray, labels: np.ndarray, colors: Sequence, alpha: float = 0.5) -> np.ndarray:
    """Blend each class's colour into ``frame`` where ``labels`` has that class; background (0) is left as it is.

    Args:
        frame: uint8 [H, W, 3] RGB.
        labels: int [H, W] class indices, same size as the frame.
        colors: [K, 3] RGB per class (e.g. a dataset's "stuff_colors").
        alpha: opacity of the colours.
    Returns:
        uint8 [H, W, 3], a new array (also when no class is present: callers draw on it).
    """
    out = np.array(frame, dtype=np.uint8, copy=True)
    for k in np.unique(labels):
        if k > 0:
            out = overlay_mask(out, labels == k, tuple(int(c) for c in colors[k]), alpha)
    return out


def clip_overlay_grid(clips: Sequence[Dict], cell: int = 128, label_height: int = 14) -> Image.Image:
    """One picture for several clips: per clip, a row with ground truth (green) and a row with the
    prediction (red) over the T frames.

    Args:
        clips: dicts with "frames" uint8 [T, H, W, 3] RGB, "gt" bool [T, H, W] (None entries allowed
            for unlabelled frames: a list), "pred" bool [T, H, W], "title" str.
        cell: side of each frame tile in pixels.
    """
    if not clips:
        raise ValueError("clip_overlay_grid: no clips given")
    num_frames = len(clips[0]["frames"])
    width = num_frames * cell
    row_h = cell + label_height
    canvas = Image.new("RGB", (width, len(clips) * 2 * row_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, clip in enumerate(clips):
        for r, (key, color, label) in enumerate((("gt", GT_COLOR, "ground truth"), ("pred", PRED_COLOR, "prediction"))):
            top = (2 * c + r) * row_h
            draw.text((2, top + 1), f"{clip['title']}: {label}", fill=(0, 0, 0))
            for t in range(num_frames):
                frame = np.asarray(clip["frames"][t])
                mask = clip[key][t]
                tile = frame if mask is None else overlay_mask(frame, np.asarray(mask), color)
                img = Image.fromarray(tile).resize((cell, cell), Image.BILINEAR)
                canvas.paste(img, (t * cell, top + label_height))
    return canvas


def save_loss_curve(histories: Dict[str, List[Tuple[int, float]]], path: str, title: str = "training loss") -> None:
    """Plot (iteration, value) series, one line per key of ``histories``, to a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(histories.values()):
        raise ValueError(f"save_loss_curve: nothing to plot for {path}")
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for name, series in histories.items():
        if series:
            it, val = zip(*series)
            ax.plot(it, val, label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
