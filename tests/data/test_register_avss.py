"""AVSBench-semantic registration: palette, names, dataset dicts, and clear errors on bad input."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from aqformer_d2.config import add_aqformer_config
from aqformer_d2.data.datasets import (
    AVSSLayoutError,
    avss_palette,
    get_avss_root,
    load_avss_split,
    load_label2idx,
    read_avss_label,
    register_all_avss_from_cfg,
    register_avss_layout,
)

from .avss_tree import class_map, class_names, make_avss_tree


def _official_pallete(num_cls):
    """AVSBench's ``_getpallete`` loop, transcribed as a flat list [R0, G0, B0, R1, ...] (independent check)."""
    pal = [0] * (num_cls * 3)
    for j in range(num_cls):
        lab, i = j, 0
        while lab > 0:
            pal[j * 3 + 0] |= ((lab >> 0) & 1) << (7 - i)
            pal[j * 3 + 1] |= ((lab >> 1) & 1) << (7 - i)
            pal[j * 3 + 2] |= ((lab >> 2) & 1) << (7 - i)
            i += 1
            lab >>= 3
    return pal


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_avss_tree(str(tmp_path_factory.mktemp("avss") / "AVSBench_semantic"))


def _copy(tree, tmp_path):
    dst = str(tmp_path / "copy")
    shutil.copytree(tree, dst)
    return dst


def test_palette_is_get_v2_pallete():
    pal = avss_palette(71)
    assert pal.shape == (71, 3) and pal.dtype == np.uint8
    assert pal.reshape(-1).tolist() == _official_pallete(71)
    assert pal[:3].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0]] and pal[70].tolist() == [32, 128, 128]
    assert len({tuple(c) for c in pal.tolist()}) == 71


def test_read_label_maps_colours_to_classes(tree):
    path = os.path.join(tree, "v2", "n_te", "labels_rgb", "3.png")
    np.testing.assert_array_equal(read_avss_label(path, avss_palette(71)), class_map("n_te", 3, 71))


def test_register_names_and_root_from_cfg(tree):
    cfg = get_cfg()
    add_aqformer_config(cfg)
    assert get_avss_root(cfg).endswith("AVSBench_semantic")
    cfg.DATASETS.AVSS_ROOT = tree
    cfg.INPUT.AUDIO.SOURCE = "wav"
    names = register_all_avss_from_cfg(cfg)
    for split in ("train", "val", "test"):
        assert f"avss_{split}" in names
        for subset in ("v1s", "v1m", "v2"):
            assert f"avss_{subset}_{split}" in names
    meta = MetadataCatalog.get("avss_test")
    assert meta.evaluator_type == "avss" and meta.num_classes == 71 and meta.ignore_label == 255
    assert meta.stuff_colors[1] == [128, 0, 0]
    test = DatasetCatalog.get("avss_test")
    assert [d["uid"] for d in test] == ["s_te", "m_te", "n_te"]
    assert MetadataCatalog.get("avss_test").stuff_classes == class_names(71)
    assert [d["uid"] for d in DatasetCatalog.get("avss_v2_test")] == ["n_te"]
    assert [d["uid"] for d in DatasetCatalog.get("avss_v1m_train")] == ["m_tr"]


def test_dataset_dicts(tree):
    dicts = {d["uid"]: d for d in load_avss_split(tree, "train")}
    s = dicts["s_tr"]
    assert s["subset"] == "v1s" and s["num_frames"] == 5 and s["vid"] == "yt_s_tr" and s["task"] == "avss"
    assert s["frame_files"][4] == os.path.join(tree, "v1s", "s_tr", "frames", "4.jpg")
    # v1s training clips are labelled on frame 0 only (official gt_temporal_mask_flag)
    assert s["label_files"][0].endswith(os.path.join("labels_rgb", "0.png")) and s["label_files"][1:] == [None] * 4
    assert all(p is not None for p in dicts["m_tr"]["label_files"])
    n = dicts["n_tr"]
    assert n["num_frames"] == 10 and len(n["frame_files"]) == 10 and (n["height"], n["width"]) == (12, 16)
    assert n["audio_wav_file"].endswith("audio.wav") and n["audio_logmel_file"] is None
    test = {d["uid"]: d for d in load_avss_split(tree, "test")}
    assert all(p is not None for p in test["s_te"]["label_files"])  # v1s test: all 5 frames labelled


# ------------------------------------------------------------------------------ bad input (issue section 5)
def test_colour_not_in_palette_names_colour_file_and_pixel(tree, tmp_path):
    root = _copy(tree, tmp_path)
    path = os.path.join(root, "v1m", "m_te", "labels_rgb", "2.png")
    rgb = np.array(Image.open(path).convert("RGB"))
    rgb[5, 7] = (1, 2, 3)
    Image.fromarray(rgb).save(path)
    with pytest.raises(AVSSLayoutError, match=r"2\.png: colour\(s\) not in the 71-class palette: RGB\(1, 2, 3\) on 1 "
                                              r"pixel\(s\), first at \(row 5, column 7\)"):
        read_avss_label(path, avss_palette(71))
    # a colour of the 71-class palette that a 9-class dataset does not have is refused too
    ok = os.path.join(root, "v1m", "m_te", "labels_rgb", "0.png")
    rgb = np.array(Image.open(ok).convert("RGB"))
    rgb[0, 0] = avss_palette(71)[40]
    Image.fromarray(rgb).save(ok)
    with pytest.raises(AVSSLayoutError, match="9-class palette"):
        read_avss_label(ok, avss_palette(9))


def test_metadata_row_without_folder(tree, tmp_path):
    root = _copy(tree, tmp_path)
    shutil.rmtree(os.path.join(root, "v2", "n_te"))
    with pytest.raises(AVSSLayoutError, match=r"v2/n_te: folder of metadata row uid='n_te' label='v2' split='test' does not exist"):
        load_avss_split(root, "test")
    assert len(load_avss_split(root, "train")) == 3  # other splits are unaffected


def test_clip_with_too_few_frames(tree, tmp_path):
    root = _copy(tree, tmp_path)
    for t in (8, 9):
        os.remove(os.path.join(root, "v2", "n_tr", "frames", f"{t}.jpg"))
    os.remove(os.path.join(root, "v1m", "m_tr", "labels_rgb", "4.png"))
    with pytest.raises(AVSSLayoutError) as e:
        load_avss_split(root, "train")
    msg = str(e.value)
    assert "2 problem(s)" in msg
    assert os.path.join("v2", "n_tr", "frames") + ": has 8 of the 10 frames subset v2 needs (missing 8.jpg, 9.jpg)" in msg
    assert os.path.join("v1m", "m_tr", "labels_rgb") + ": has 4 of the 5 labels v1m train needs (missing 4.png)" in msg


@pytest.mark.parametrize(
    "table, match",
    [
        ({n: i for i, n in enumerate(class_names(70))}, "has 70 entries, expected 71 classes"),
        (dict({n: i for i, n in enumerate(class_names(71)) if i}, bg=0), r"'background' must have index 0 .*\['bg'\]"),
        (dict({n: i + 1 for i, n in enumerate(class_names(71)[1:])}, background=70), "indices must be 0..70"),
        ([["background", 0]], "expected a JSON object"),
    ],
)
def test_bad_label2idx(tree, tmp_path, table, match):
    root = _copy(tree, tmp_path)
    path = os.path.join(root, "label2idx.json")
    with open(path, "w") as f:
        json.dump(table, f)
    with pytest.raises(AVSSLayoutError, match=match) as e:
        load_avss_split(root, "test")
    assert path in str(e.value)


def test_class_count_is_a_parameter(tree, tmp_path):
    root = _copy(tree, tmp_path)
    with open(os.path.join(root, "label2idx.json"), "w") as f:
        json.dump({n: i for i, n in enumerate(class_names(9))}, f)
    assert load_label2idx(os.path.join(root, "label2idx.json"), 9) == class_names(9)
    with pytest.raises(AVSSLayoutError, match="has 9 entries, expected 71"):
        load_avss_split(root, "test")


def test_metadata_errors_name_file_and_line(tree, tmp_path):
    root = _copy(tree, tmp_path)
    csv_file = os.path.join(root, "metadata.csv")
    with open(csv_file, "a") as f:
        f.write("yt_x,test,x,s_te,v3\n")
    with pytest.raises(AVSSLayoutError, match=r"metadata.csv: line 9 has label 'v3'"):
        load_avss_split(root, "test")
    with open(csv_file, "w") as f:
        f.write("vid,name,split,label\n")
    with pytest.raises(AVSSLayoutError, match=r"lacks the column\(s\) \['uid'\]"):
        load_avss_split(root, "test")


def test_registering_over_a_foreign_name_is_refused(tree):
    DatasetCatalog.register("avss_foreign_train", lambda: [])  # the first name register_avss_layout writes
    try:
        with pytest.raises(ValueError, match="already registered by someone else"):
            register_avss_layout("avss_foreign", tree)
        assert DatasetCatalog.get("avss_foreign_train") == []
    finally:
        DatasetCatalog.remove("avss_foreign_train")


def test_missing_logmel_says_how_to_write_it(tree):
    with pytest.raises(AVSSLayoutError, match=r"audio_log_mel.pkl: missing \(INPUT.AUDIO.SOURCE = 'logmel'\) .*--compute-logmel"):
        load_avss_split(tree, "test", audio_source="logmel")
