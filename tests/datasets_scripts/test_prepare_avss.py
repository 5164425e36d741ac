"""datasets/prepare_avsbench.py --task avss: validation of an AVSBench-semantic tree and --compute-logmel."""
import importlib.util
import os
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from aqformer_d2.audio.logmel import wav_file_to_examples
from aqformer_d2.utils.safe_pickle import load_pickle_restricted
from tests.data.avss_tree import make_avss_tree

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def prep():
    path = os.path.join(REPO, "datasets", "prepare_avsbench.py")
    spec = importlib.util.spec_from_file_location("prepare_avsbench_script_avss", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_avss_tree(str(tmp_path_factory.mktemp("prep_avss") / "AVSS"))


def test_clean_tree_and_compute_logmel(prep, tree, tmp_path, capsys):
    root = str(tmp_path / "t")
    shutil.copytree(tree, root)
    assert prep.main([root, "--task", "avss"]) == 0
    out = capsys.readouterr().out
    assert "No problems found." in out and "avss/v2" in out
    assert prep.main([root, "--task", "avss", "--compute-logmel"]) == 0
    for subset, uid, n in [("v1s", "s_tr", 5), ("v2", "n_te", 10)]:
        pkl = os.path.join(root, subset, uid, "audio_log_mel.pkl")
        got = load_pickle_restricted(pkl)
        assert tuple(got.shape) == (n, 1, 96, 64)
        torch.testing.assert_close(got, wav_file_to_examples(os.path.join(root, subset, uid, "audio.wav"), n),
                                   rtol=0, atol=0)
    assert not [f for _, _, fs in os.walk(root) for f in fs if f.endswith(".tmp")]
    # a registration with INPUT.AUDIO.SOURCE "logmel" now finds every .pkl
    from aqformer_d2.data.datasets import load_avss_split

    assert all(d["audio_logmel_file"] for d in load_avss_split(root, "test", audio_source="logmel"))


def test_problems_are_reported_by_path(prep, tree, tmp_path, capsys):
    root = str(tmp_path / "t")
    shutil.copytree(tree, root)
    label = os.path.join(root, "v1m", "m_te", "labels_rgb", "1.png")
    rgb = np.array(Image.open(label).convert("RGB"))
    rgb[2, 3] = (200, 10, 10)
    Image.fromarray(rgb).save(label)
    wav = os.path.join(root, "v2", "n_tr", "audio.wav")
    with open(wav, "wb") as f:
        f.write(b"not audio")
    shutil.rmtree(os.path.join(root, "v1s", "s_te"))
    os.remove(os.path.join(root, "v2", "n_va", "frames", "9.jpg"))
    assert prep.main([root, "--task", "avss", "--compute-logmel"]) == 1
    out = capsys.readouterr().out
    assert f"{label}: colour(s) not in the 71-class palette: RGB(200, 10, 10) on 1 pixel(s), first at (row 2, column 3)" in out
    assert f"{wav}: " in out and "unreadable audio WAV" in out
    assert os.path.join(root, "v1s", "s_te") + ": folder of metadata row uid='s_te'" in out
    assert "has 9 of the 10 frames subset v2 needs (missing 9.jpg)" in out
    assert not os.path.exists(os.path.join(root, "v2", "n_tr", "audio_log_mel.pkl"))  # nothing from a bad WAV


def test_label2idx_count_is_checked(prep, tree, capsys):
    assert prep.main([tree, "--task", "avss", "--num-classes", "9"]) == 1
    assert "has 71 entries, expected 9 classes" in capsys.readouterr().out
