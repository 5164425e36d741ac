"""AVSBench-layout registration: file naming, lazy loading, and clear errors for bad trees."""
import os
import pickle
import uuid

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from aqformer_d2 import add_aqformer_config
from aqformer_d2.data.datasets import (
    AVSLayoutError,
    get_avs_root,
    read_avs_mask,
    register_all_avsbench,
    register_avs_layout,
)

T = 5


def default_frame(video_index, t, h, w):
    """[h, w, 3] uint8: channel 0 a horizontal ramp (encodes orientation), 1 the frame index, 2 the video."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = (np.arange(w) * (250 // max(w - 1, 1)))[None, :]
    img[..., 1] = 40 * t
    img[..., 2] = 30 * video_index
    return img


def default_mask(video_index, t, h, w):
    """[h, w] uint8 {0, 255}: the left third is foreground (asymmetric, so a flip is visible)."""
    m = np.zeros((h, w), np.uint8)
    m[:, : max(1, w // 3)] = 255
    return m


def _save_png(path, arr, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path)


def write_avs_tree(
    root,
    s4=(("s4vidA", "0", "dog", "train"), ("s4vidB", "3", "cat", "test")),
    ms3=(("ms3vidA", "train"), ("ms3vidB", "val")),
    hw=(24, 32),
    frame_fn=default_frame,
    mask_fn=default_mask,
):
    """Write a small tree in the exact AVSBench layout; returns {video name: audio tensor [5, 1, 96, 64]}."""
    h, w = hw
    audio = {}
    wav = (0.1 * np.sin(2 * np.pi * 440 * np.arange(5 * 16000) / 16000)).astype(np.float32)  # 5 s, 16 kHz

    def write_audio(logmel_path, wav_path, name, k):
        a = torch.full((T, 1, 96, 64), float(k)) + torch.arange(T, dtype=torch.float32).view(T, 1, 1, 1)
        os.makedirs(os.path.dirname(logmel_path), exist_ok=True)
        with open(logmel_path, "wb") as f:
            pickle.dump(a, f)
        os.makedirs(os.path.dirname(wav_path), exist_ok=True)
        sf.write(wav_path, wav, 16000, subtype="PCM_16")
        audio[name] = a

    if s4 is not None:
        base = os.path.join(root, "Single-source")
        os.makedirs(base, exist_ok=True)
        with open(os.path.join(base, "s4_meta_data.csv"), "w") as f:
            f.write("name,start,category,split\n")
            for name, start, cat, split in s4:
                f.write(f"{name},{start},{cat},{split}\n")
        for k, (name, _, cat, split) in enumerate(s4):
            d = os.path.join(base, "s4_data")
            for i in range(1, T + 1):
                _save_png(os.path.join(d, "visual_frames", split, cat, name, f"{name}_{i}.png"), frame_fn(k, i - 1, h, w))
            for i in range(1, (1 if split == "train" else T) + 1):
                _save_png(os.path.join(d, "gt_masks", split, cat, name, f"{name}_{i}.png"), mask_fn(k, i - 1, h, w))
            write_audio(
                os.path.join(d, "audio_log_mel", split, cat, name + ".pkl"),
                os.path.join(d, "audio_wav", split, cat, name + ".wav"),
                name,
                k,
            )
    if ms3 is not None:
        base = os.path.join(root, "Multi-sources")
        os.makedirs(base, exist_ok=True)
        with open(os.path.join(base, "ms3_meta_data.csv"), "w") as f:
            f.write("video_id,a_obj,split\n")
            for name, split in ms3:
                f.write(f"{name},guitar,{split}\n")
        for k, (name, split) in enumerate(ms3):
            d = os.path.join(base, "ms3_data")
            for i in range(1, T + 1):
                _save_png(os.path.join(d, "visual_frames", name, f"{name}.mp4_{i}.png"), frame_fn(k, i - 1, h, w))
                # MS3 masks are palette images (official loader: mode 'P'); index 1 = foreground.
                m = (mask_fn(k, i - 1, h, w) > 0).astype(np.uint8)
                p = Image.fromarray(m, mode="P")
                p.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
                path = os.path.join(d, "gt_masks", split, name, f"{name}_{i}.png")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                p.save(path)
            write_audio(
                os.path.join(d, "audio_log_mel", split, name + ".pkl"),
                os.path.join(d, "audio_wav", split, name + ".wav"),
                name,
                10 + k,
            )
    return audio


def unique_prefix():
    return "t" + uuid.uuid4().hex[:10]


def test_s4_dicts_exact_naming(tmp_path):
    root = str(tmp_path)
    write_avs_tree(root)
    prefix = unique_prefix()
    names = register_avs_layout(prefix, root, "s4")
    assert names == [f"{prefix}_s4_train", f"{prefix}_s4_val", f"{prefix}_s4_test"]

    train = DatasetCatalog.get(f"{prefix}_s4_train")
    assert len(train) == 1
    d = train[0]
    s4 = os.path.join(root, "Single-source", "s4_data")
    assert d["video_id"] == "s4vidA" and d["task"] == "s4" and d["split"] == "train" and d["category"] == "dog"
    assert d["frame_files"] == [os.path.join(s4, "visual_frames", "train", "dog", "s4vidA", f"s4vidA_{i}.png") for i in range(1, 6)]
    # S4 train is semi-supervised: only the first frame has a mask.
    assert d["mask_files"] == [os.path.join(s4, "gt_masks", "train", "dog", "s4vidA", "s4vidA_1.png"), None, None, None, None]
    assert d["audio_logmel_file"] == os.path.join(s4, "audio_log_mel", "train", "dog", "s4vidA.pkl")
    assert d["audio_wav_file"] == os.path.join(s4, "audio_wav", "train", "dog", "s4vidA.wav")
    assert (d["height"], d["width"]) == (24, 32)

    assert DatasetCatalog.get(f"{prefix}_s4_val") == []
    test = DatasetCatalog.get(f"{prefix}_s4_test")
    assert [x["video_id"] for x in test] == ["s4vidB"]
    assert test[0]["mask_files"] == [
        os.path.join(s4, "gt_masks", "test", "cat", "s4vidB", f"s4vidB_{i}.png") for i in range(1, 6)
    ]

    meta = MetadataCatalog.get(f"{prefix}_s4_test")
    assert (meta.evaluator_type, meta.task, meta.split, meta.root) == ("avs", "s4", "test", root)


def test_ms3_dicts_exact_naming(tmp_path):
    root = str(tmp_path)
    write_avs_tree(root)
    prefix = unique_prefix()
    register_avs_layout(prefix, root, "ms3")
    ms3 = os.path.join(root, "Multi-sources", "ms3_data")
    train = DatasetCatalog.get(f"{prefix}_ms3_train")
    assert [x["video_id"] for x in train] == ["ms3vidA"]
    d = train[0]
    assert d["category"] is None and d["task"] == "ms3"
    # frames: no split folder, ".mp4_" infix
    assert d["frame_files"] == [os.path.join(ms3, "visual_frames", "ms3vidA", f"ms3vidA.mp4_{i}.png") for i in range(1, 6)]
    # MS3 train has all 5 masks
    assert d["mask_files"] == [os.path.join(ms3, "gt_masks", "train", "ms3vidA", f"ms3vidA_{i}.png") for i in range(1, 6)]
    assert d["audio_logmel_file"] == os.path.join(ms3, "audio_log_mel", "train", "ms3vidA.pkl")
    assert d["audio_wav_file"] == os.path.join(ms3, "audio_wav", "train", "ms3vidA.wav")
    assert [x["video_id"] for x in DatasetCatalog.get(f"{prefix}_ms3_val")] == ["ms3vidB"]
    assert DatasetCatalog.get(f"{prefix}_ms3_test") == []


def test_registration_is_lazy_and_reregisters_with_new_root(tmp_path):
    default_root = MetadataCatalog.get("avsbench_s4_train").root  # import-time registration
    old_root, new_root = str(tmp_path / "missing"), str(tmp_path / "real")
    try:
        names = register_all_avsbench(old_root)  # nothing exists there: registering must not read anything
        assert sorted(names) == sorted(f"avsbench_{t}_{s}" for t in ("s4", "ms3") for s in ("train", "val", "test"))
        with pytest.raises(FileNotFoundError, match="s4_meta_data.csv"):
            DatasetCatalog.get("avsbench_s4_train")
        write_avs_tree(new_root)
        register_all_avsbench(new_root)  # replaces the earlier registration (e.g. cfg.DATASETS.AVS_ROOT)
        assert MetadataCatalog.get("avsbench_ms3_val").root == new_root
        assert [x["video_id"] for x in DatasetCatalog.get("avsbench_ms3_val")] == ["ms3vidB"]
    finally:
        register_all_avsbench(default_root)


def test_refuses_to_replace_foreign_registration(tmp_path):
    prefix = unique_prefix()
    DatasetCatalog.register(f"{prefix}_s4_train", lambda: [])
    MetadataCatalog.get(f"{prefix}_s4_train").set(evaluator_type="coco")
    with pytest.raises(ValueError, match=f"{prefix}_s4_train"):
        register_avs_layout(prefix, str(tmp_path), "s4")


def test_missing_frame_and_mask_are_listed(tmp_path):
    root = str(tmp_path)
    write_avs_tree(root)
    s4 = os.path.join(root, "Single-source", "s4_data")
    frame = os.path.join(s4, "visual_frames", "test", "cat", "s4vidB", "s4vidB_3.png")
    mask = os.path.join(s4, "gt_masks", "test", "cat", "s4vidB", "s4vidB_5.png")
    os.remove(frame)
    os.remove(mask)
    prefix = unique_prefix()
    register_avs_layout(prefix, root, "s4")
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get(f"{prefix}_s4_test")
    msg = str(e.value)
    assert frame in msg and mask in msg and "2 file(s)" in msg


def test_many_missing_files_are_counted(tmp_path):
    root = str(tmp_path)
    write_avs_tree(root, s4=None)
    vf = os.path.join(root, "Multi-sources", "ms3_data", "visual_frames")
    for name in ("ms3vidA",):
        for i in range(1, 6):
            os.remove(os.path.join(vf, name, f"{name}.mp4_{i}.png"))
    gm = os.path.join(root, "Multi-sources", "ms3_data", "gt_masks", "train", "ms3vidA")
    for i in range(1, 6):
        os.remove(os.path.join(gm, f"ms3vidA_{i}.png"))
    prefix = unique_prefix()
    register_avs_layout(prefix, root, "ms3")
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get(f"{prefix}_ms3_train")
    msg = str(e.value)
    assert "10 file(s)" in msg and os.path.join(vf, "ms3vidA", "ms3vidA.mp4_1.png") in msg


def test_missing_audio_file(tmp_path):
    root = str(tmp_path)
    write_avs_tree(root)
    pkl = os.path.join(root, "Multi-sources", "ms3_data", "audio_log_mel", "val", "ms3vidB.pkl")
    os.remove(pkl)
    prefix = unique_prefix()
    register_avs_layout(prefix, root, "ms3")
    with pytest.raises(FileNotFoundError, match=pkl):
        DatasetCatalog.get(f"{prefix}_ms3_val")
    # Only the configured audio source is required when asked so.
    prefix2 = unique_prefix()
    register_avs_layout(prefix2, root, "ms3", audio_sources=("wav",))
    assert len(DatasetCatalog.get(f"{prefix2}_ms3_val")) == 1


@pytest.mark.parametrize(
    "csv_text, needle",
    [
        ("name,start,category,part\nv1,0,dog,train\n", "no 'split' column"),
        ("name,start,category,split\nv1,0,dog,train\nv2,0,dog\n", "line 3 has 3 columns"),
        ("name,start,category,split\nv1,0,dog,train\nv2,0,dog,training\n", "line 3 has split 'training'"),
        ("name,split\nv1,train\n", "needs at least 4"),
    ],
)
def test_malformed_csv_names_file_and_row(tmp_path, csv_text, needle):
    root = str(tmp_path)
    os.makedirs(os.path.join(root, "Single-source"))
    csv_path = os.path.join(root, "Single-source", "s4_meta_data.csv")
    with open(csv_path, "w") as f:
        f.write(csv_text)
    prefix = unique_prefix()
    register_avs_layout(prefix, root, "s4")
    with pytest.raises(AVSLayoutError) as e:
        DatasetCatalog.get(f"{prefix}_s4_train")
    assert csv_path in str(e.value) and needle in str(e.value)


def test_get_avs_root(monkeypatch):
    cfg = get_cfg()
    add_aqformer_config(cfg)
    monkeypatch.delenv("DETECTRON2_DATASETS", raising=False)
    assert get_avs_root(cfg) == "datasets"
    monkeypatch.setenv("DETECTRON2_DATASETS", "/data/d2")
    assert get_avs_root(cfg) == "/data/d2"
    cfg.DATASETS.AVS_ROOT = "/data/avs"
    assert get_avs_root(cfg) == "/data/avs"


def test_read_avs_mask_any_nonzero_is_foreground(tmp_path):
    expected = np.array([[0, 1, 0], [1, 1, 0]], np.uint8)
    p = tmp_path / "p.png"  # palette image: foreground index 1 whose colour is black still counts (mode 'P')
    im = Image.fromarray(expected, mode="P")
    im.putpalette([0, 0, 0] * 256)
    im.save(p)
    np.testing.assert_array_equal(read_avs_mask(str(p)), expected)
    g = tmp_path / "g.png"
    Image.fromarray(expected * 255, mode="L").save(g)
    np.testing.assert_array_equal(read_avs_mask(str(g)), expected)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.stack([np.zeros_like(expected), expected * 7, np.zeros_like(expected)], -1), mode="RGB").save(rgb)
    np.testing.assert_array_equal(read_avs_mask(str(rgb)), expected)
    with pytest.raises(OSError, match="nope.png"):
        read_avs_mask(str(tmp_path / "nope.png"))
