"""datasets/prepare_avsbench.py: problems reported by path, exit status, --compute-logmel."""
import importlib.util
import os
import pickle
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from aqformer_d2.audio.logmel import wav_file_to_examples
from aqformer_d2.data.datasets.register_avsbench import avs_layout_paths

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = 224


@pytest.fixture(scope="module")
def prep():
    path = os.path.join(REPO, "datasets", "prepare_avsbench.py")
    spec = importlib.util.spec_from_file_location("prepare_avsbench_script", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def _png(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)


def _wav(path, seconds):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    t = np.arange(int(seconds * 16000)) / 16000
    sf.write(path, (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, subtype="PCM_16")


def _pkl(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(torch.zeros(5, 1, 96, 64), f)


def write_tree(root):
    """S4: one train video (1 mask), one test video (5 masks); MS3: one val video. Everything valid."""
    s4 = avs_layout_paths(root, "s4")
    os.makedirs(os.path.dirname(s4["csv"]))
    with open(s4["csv"], "w") as f:
        f.write("name,start,category,split\nvidA,0,dog,train\nvidB,2,cat,test\n")
    frame = np.full((SIZE, SIZE, 3), 90, np.uint8)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    for name, cat, split, n_masks in (("vidA", "dog", "train", 1), ("vidB", "cat", "test", 5)):
        for i in range(1, 6):
            _png(os.path.join(s4["frames"], split, cat, name, f"{name}_{i}.png"), frame)
        for i in range(1, n_masks + 1):
            _png(os.path.join(s4["masks"], split, cat, name, f"{name}_{i}.png"), mask)
        _wav(os.path.join(s4["wav"], split, cat, name + ".wav"), 5.0)
        _pkl(os.path.join(s4["logmel"], split, cat, name + ".pkl"))
    ms3 = avs_layout_paths(root, "ms3")
    os.makedirs(os.path.dirname(ms3["csv"]))
    with open(ms3["csv"], "w") as f:
        f.write("video_id,split\nmsC,val\n")
    for i in range(1, 6):
        _png(os.path.join(ms3["frames"], "msC", f"msC.mp4_{i}.png"), frame)
        _png(os.path.join(ms3["masks"], "val", "msC", f"msC_{i}.png"), mask)
    _wav(os.path.join(ms3["wav"], "val", "msC.wav"), 5.0)
    _pkl(os.path.join(ms3["logmel"], "val", "msC.pkl"))
    return s4, ms3


def test_clean_tree_passes(prep, tmp_path, capsys):
    write_tree(str(tmp_path))
    assert prep.main([str(tmp_path)]) == 0
    report = capsys.readouterr().out
    assert "No problems found." in report
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line for line in report.splitlines()
            if line.startswith("|")}
    # frames / masks / wav / pkl found over expected for each split
    assert "| 5/5 " in rows[("s4", "train")] and "| 1/1 " in rows[("s4", "train")]
    assert "| 5/5 " in rows[("s4", "test")] and "| 1/1 " in rows[("s4", "test")]
    assert "| 0/0 " in rows[("s4", "val")] and "| 5/5 " in rows[("ms3", "val")]


def test_missing_mask_and_short_audio_reported(prep, tmp_path, capsys):
    s4, ms3 = write_tree(str(tmp_path))
    missing_mask = os.path.join(s4["masks"], "test", "cat", "vidB", "vidB_3.png")
    os.remove(missing_mask)
    short_wav = os.path.join(ms3["wav"], "val", "msC.wav")
    _wav(short_wav, 3.0)
    assert prep.main([str(tmp_path), "--task", "both"]) == 1
    report = capsys.readouterr().out
    assert "2 problem(s)" in report
    assert f"missing masks (1):\n    {missing_mask}" in report
    assert f"{short_wav}: 3.000 s < 5 s" in report
    # Checking S4 alone sees the mask only.
    assert prep.main([str(tmp_path), "--task", "s4"]) == 1
    report = capsys.readouterr().out
    assert missing_mask in report and short_wav not in report
    assert prep.main([str(tmp_path), "--task", "ms3", "--min-audio-seconds", "2.5"]) == 0


def test_inconsistent_sizes_and_bad_pkl(prep, tmp_path, capsys):
    s4, ms3 = write_tree(str(tmp_path))
    odd = os.path.join(s4["frames"], "train", "dog", "vidA", "vidA_2.png")
    _png(odd, np.zeros((100, 120, 3), np.uint8))
    bad_pkl = os.path.join(ms3["logmel"], "val", "msC.pkl")
    with open(bad_pkl, "wb") as f:
        pickle.dump(torch.zeros(4, 1, 96, 64), f)
    assert prep.main([str(tmp_path)]) == 1
    report = capsys.readouterr().out
    assert "vidA: 120x100: frame vidA_2.png; 224x224: frame vidA_1.png, frame vidA_3.png" in report
    assert f"{bad_pkl}: shape [4, 1, 96, 64], expected [5, 1, 96, 64]" in report


def test_missing_csv_is_a_problem(prep, tmp_path, capsys):
    s4, _ = write_tree(str(tmp_path))
    os.remove(s4["csv"])
    assert prep.main([str(tmp_path)]) == 1
    assert s4["csv"] in capsys.readouterr().out


def test_compute_logmel_writes_missing_pkl(prep, tmp_path, capsys):
    s4, _ = write_tree(str(tmp_path))
    pkl = os.path.join(s4["logmel"], "train", "dog", "vidA.pkl")
    wav = os.path.join(s4["wav"], "train", "dog", "vidA.wav")
    os.remove(pkl)
    assert prep.main([str(tmp_path)]) == 1
    assert f"{pkl}: --compute-logmel writes it from the WAV" in capsys.readouterr().out
    assert prep.main([str(tmp_path), "--compute-logmel"]) == 0
    assert "No problems found." in capsys.readouterr().out
    with open(pkl, "rb") as f:
        examples = pickle.load(f)
    assert isinstance(examples, torch.Tensor) and examples.dtype == torch.float32
    assert tuple(examples.shape) == (5, 1, 96, 64)
    torch.testing.assert_close(examples, wav_file_to_examples(wav, num_examples=5))


def test_consistent_non_224_video_is_a_note_not_a_problem(prep, tmp_path, capsys):
    _, ms3 = write_tree(str(tmp_path))
    for i in range(1, 6):
        _png(os.path.join(ms3["frames"], "msC", f"msC.mp4_{i}.png"), np.zeros((100, 160, 3), np.uint8))
        _png(os.path.join(ms3["masks"], "val", "msC", f"msC_{i}.png"), np.zeros((100, 160), np.uint8))
    assert prep.main([str(tmp_path)]) == 0
    report = capsys.readouterr().out
    assert "No problems found." in report
    assert "160x100 (AVSBench: 224x224): 1 video(s)" in report
    assert os.path.join(ms3["frames"], "msC") in report
