"""overlay_classes: each class tinted with its colour, background untouched."""
import numpy as np

from aqformer_d2.utils.visualize import overlay_classes


def test_overlay_classes_colours_only_object_pixels():
    frame = np.full((4, 4, 3), 100, np.uint8)
    labels = np.zeros((4, 4), np.int64)
    labels[0, :2], labels[3, 3] = 1, 2
    colors = [(0, 0, 0), (200, 0, 0), (0, 200, 0)]
    out = overlay_classes(frame, labels, colors, alpha=0.5)
    assert (out[labels == 0] == 100).all()
    # 0.5 * 100 + 0.5 * colour, exact in float32 and rounded
    assert tuple(out[0, 0]) == (150, 50, 50) and tuple(out[3, 3]) == (50, 150, 50)
    assert out.dtype == np.uint8 and (frame == 100).all()  # input not modified


def test_overlay_classes_returns_a_new_writable_array_even_without_classes():
    frame = np.full((4, 4, 3), 100, np.uint8)
    frame.setflags(write=False)  # a decoded video frame may be read-only
    out = overlay_classes(frame, np.zeros((4, 4), np.int64), [[0, 0, 0]])
    assert out.flags.writeable and not np.shares_memory(out, frame)
    out[0, 0] = 0  # callers draw on it (the demo's legend)
    assert frame[0, 0, 0] == 100
