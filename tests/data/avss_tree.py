"""A tiny AVSBench-semantic tree for tests: a few clips of 12x16 frames, written from class maps."""
import json
import os

import numpy as np
import soundfile as sf
from PIL import Image

from aqformer_d2.data.datasets.register_avss import AVSS_SUBSET_FRAMES, avss_palette, supervised_frames

HEIGHT, WIDTH = 12, 16
# (subset, split, uid): one clip of each subset in train and test, and one v2 clip in val.
CLIPS = [
    ("v1s", "train", "s_tr"),
    ("v1m", "train", "m_tr"),
    ("v2", "train", "n_tr"),
    ("v2", "val", "n_va"),
    ("v1s", "test", "s_te"),
    ("v1m", "test", "m_te"),
    ("v2", "test", "n_te"),
]


def class_names(num_classes):
    return ["background"] + [f"class{j}" for j in range(1, num_classes)]


def class_map(uid, t, num_classes):
    """Deterministic [H, W] class map of frame t of clip uid: background + two rectangles."""
    rng = np.random.default_rng([sum(map(ord, uid)), t])
    lab = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    for c in rng.choice(np.arange(1, num_classes), size=2, replace=False):
        y, x = rng.integers(0, HEIGHT - 4), rng.integers(0, WIDTH - 4)
        lab[y : y + 4, x : x + 5] = c
    return lab


def write_wav(path, seconds):
    t = np.arange(int(seconds * 16000)) / 16000
    sf.write(path, (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, subtype="PCM_16")


def make_avss_tree(root, num_classes=71, clips=CLIPS):
    """Write metadata.csv (columns in an unusual order plus an extra one), label2idx.json and the clips."""
    os.makedirs(root, exist_ok=True)
    palette = avss_palette(num_classes)
    rows = []
    for subset, split, uid in clips:
        n = AVSS_SUBSET_FRAMES[subset]
        d = os.path.join(root, subset, uid)
        os.makedirs(os.path.join(d, "frames"), exist_ok=True)
        os.makedirs(os.path.join(d, "labels_rgb"), exist_ok=True)
        for t in range(n):
            lab = class_map(uid, t, num_classes)
            Image.fromarray(np.stack([lab * 3, lab * 2, 255 - lab], axis=-1).astype(np.uint8)).save(
                os.path.join(d, "frames", f"{t}.jpg"), quality=95)
            if t < supervised_frames(subset, split):
                Image.fromarray(palette[lab]).save(os.path.join(d, "labels_rgb", f"{t}.png"))
        write_wav(os.path.join(d, "audio.wav"), n)
        rows.append((f"yt_{uid}", split, "x", uid, subset))
    with open(os.path.join(root, "metadata.csv"), "w", encoding="utf-8") as f:
        f.write("vid,split,a_obj,uid,label\n")
        for r in rows:
            f.write(",".join(r) + "\n")
    with open(os.path.join(root, "label2idx.json"), "w", encoding="utf-8") as f:
        json.dump({n: i for i, n in enumerate(class_names(num_classes))}, f)
    return root
