"""SynthAVS-semantic: AVSS layout, labels = classes of visible sounding objects, silent distractors,
changing sounding sets in v2, determinism, registration and the command line. Tiny (48x48, few clips)."""
import csv
import filecmp
import importlib.util
import json
import os
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog

from aqformer_d2.audio.logmel import wav_file_to_examples
from aqformer_d2.data.dataset_mappers import AVSSClipMapper
from aqformer_d2.data.datasets import avss_palette, read_avss_label, register_all_synthavs_avss
from aqformer_d2.data.synthavs import (
    SEMANTIC_MANIFEST_NAME,
    generate_synthavs_semantic,
    semantic_class_names,
    synthesize_clip,
)
from aqformer_d2.utils.safe_pickle import load_pickle_restricted

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(seed=0, n_train=3, n_val=1, n_test=2, image_size=48)
FRAMES = {"v1s": 5, "v1m": 5, "v2": 10}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("synthavs_sem") / "SynthAVS_semantic")
    manifest = generate_synthavs_semantic(path, **TINY)
    assert manifest["complete"] is True and manifest["skipped"] is False
    return path


def _rows(root):
    with open(os.path.join(root, "metadata.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _records(root):
    with open(os.path.join(root, "synthavs_clips.jsonl")) as f:
        return {r["name"]: r for r in map(json.loads, f)}


def test_layout_and_label2idx(root):
    names = json.load(open(os.path.join(root, "label2idx.json")))
    assert len(names) == 9 and names["background"] == 0
    assert sorted(names, key=names.get) == semantic_class_names()
    rows = _rows(root)
    assert len(rows) == 3 * (3 + 1 + 2)
    for row in rows:
        subset, split, uid = row["label"], row["split"], row["uid"]
        n = FRAMES[subset]
        d = os.path.join(root, subset, uid)
        assert sorted(os.listdir(os.path.join(d, "frames"))) == sorted(f"{i}.jpg" for i in range(n))
        n_lab = 1 if (subset == "v1s" and split == "train") else n
        assert sorted(os.listdir(os.path.join(d, "labels_rgb"))) == sorted(f"{i}.png" for i in range(n_lab))
        info = sf.info(os.path.join(d, "audio.wav"))
        assert info.samplerate == 16000 and info.frames == 16000 * n
        logmel = load_pickle_restricted(os.path.join(d, "audio_log_mel.pkl"))
        torch.testing.assert_close(logmel, wav_file_to_examples(os.path.join(d, "audio.wav"), n), rtol=0, atol=0)


def test_labels_are_classes_of_visible_sounding_objects(root):
    palette = avss_palette(9)
    for row in _rows(root):
        if row["split"] != "test":
            continue
        clip = synthesize_clip(0, row["label"], "test", int(row["uid"][-5:]), image_size=48, num_categories=8)
        for t in range(clip.num_frames):
            label = read_avss_label(os.path.join(root, row["label"], row["uid"], "labels_rgb", f"{t}.png"), palette)
            expected = np.zeros((48, 48), dtype=np.uint8)
            for k, c in enumerate(clip.category_ids):
                if clip.sounding[t, k]:
                    expected[clip.visible_masks[t, k]] = c + 1
            np.testing.assert_array_equal(label, expected)
            assert (label > 0).sum() == clip.gt_masks[t].sum()


def test_silent_objects_of_other_classes_and_changing_sets(root):
    records = _records(root)
    changes_in_v2 = 0
    for rec in records.values():
        sounding = np.array([o["sounding"] for o in rec["objects"]]).T  # [T, K]
        silent = [o["category"] for o in rec["objects"] if not any(o["sounding"])]
        heard = {o["category"] for o in rec["objects"] if any(o["sounding"])}
        assert silent and not heard & set(silent), rec["name"]  # a silent object of another class, every clip
        if rec["variant"] == "v1s":
            assert sounding.sum(axis=1).tolist() == [1] * 5 and sounding.any(axis=0).sum() == 1
        else:
            assert all((sounding[t] != sounding[t + 1]).any() for t in range(len(sounding) - 1))
        if rec["variant"] == "v2":
            assert len(sounding) == 10 and len(heard) >= 2
            changes_in_v2 += len({tuple(c) for c in rec["label_classes"]}) > 1
    assert changes_in_v2 >= 4  # the classes in the labels change over time in the v2-like clips


def test_registered_loaded_and_mapped(root):
    register_all_synthavs_avss(root, audio_source="logmel")
    try:
        test = DatasetCatalog.get("synthavs_avss_test")
        assert len(test) == 6 and {d["subset"] for d in test} == {"v1s", "v1m", "v2"}
        assert MetadataCatalog.get("synthavs_avss_test").stuff_classes == semantic_class_names()
        assert MetadataCatalog.get("synthavs_avss_test").num_classes == 9
        mapper = AVSSClipMapper(is_train=True, augmentations=[], image_format="RGB", pad_frames=10,
                                pad_value=(124, 116, 104), audio_source="logmel")
        out = mapper(DatasetCatalog.get("synthavs_avss_v1s_train")[0])
        assert out["mask_valid"].tolist() == [True] + [False] * 9 and out["sem_seg"][0].max() <= 8
    finally:
        register_all_synthavs_avss()


def test_same_seed_same_bytes_rerun_skips_and_foreign_tree_refused(root, tmp_path):
    again = str(tmp_path / "again")
    generate_synthavs_semantic(again, **dict(TINY, n_train=1, n_val=0, n_test=0))
    for rel in ("label2idx.json", "v2/synth_v2_train_00000/audio.wav", "v2/synth_v2_train_00000/labels_rgb/7.png",
                "v1m/synth_v1m_train_00000/frames/3.jpg", "v1s/synth_v1s_train_00000/audio_log_mel.pkl"):
        assert filecmp.cmp(os.path.join(root, rel), os.path.join(again, rel), shallow=False), rel
    wav = os.path.join(again, "v2/synth_v2_train_00000/audio.wav")
    mtime = os.path.getmtime(wav)
    assert generate_synthavs_semantic(again, **dict(TINY, n_train=1, n_val=0, n_test=0))["skipped"] is True
    assert os.path.getmtime(wav) == mtime
    with pytest.raises(FileExistsError, match="different parameters"):
        generate_synthavs_semantic(again, **dict(TINY, n_train=1, n_val=0, n_test=0, seed=1))
    foreign = tmp_path / "real"
    foreign.mkdir()
    (foreign / "metadata.csv").write_text("vid,uid,split,label\n")
    with pytest.raises(FileExistsError, match="not a SynthAVS dataset .*AVSBench-semantic"):
        generate_synthavs_semantic(str(foreign), n_train=1, n_val=0, n_test=0, image_size=32, overwrite=True)
    assert (foreign / "metadata.csv").read_text() == "vid,uid,split,label\n"


def test_command_line(tmp_path):
    spec = importlib.util.spec_from_file_location("prepare_synthavs_sem", os.path.join(REPO, "datasets", "prepare_synthavs.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        out = str(tmp_path / "cli")
        assert module.main(["--root", out, "--avss", "--n-train", "1", "--n-val", "0", "--n-test", "0",
                            "--image-size", "32", "--quiet"]) == 0
    finally:
        del sys.modules[spec.name]
    assert json.load(open(os.path.join(out, SEMANTIC_MANIFEST_NAME)))["params"]["splits"]["v2"]["train"] == 1
    assert len(_rows(out)) == 3
