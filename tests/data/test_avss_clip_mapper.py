"""AVSSClipMapper: the official 10-frame padding, supervised / real frame flags, audio, augmentation, bad input."""
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.config import get_cfg
from detectron2.data import transforms as T

from aqformer_d2.audio.logmel import wav_file_to_examples
from aqformer_d2.config import add_aqformer_config
from aqformer_d2.data.dataset_mappers import AQ_DATASET_MAPPER_REGISTRY, AVSSClipMapper
from aqformer_d2.data.datasets import AVSSLayoutError, load_avss_split

from .avss_tree import HEIGHT, WIDTH, class_map, make_avss_tree

MEAN = (123.675, 116.28, 103.53)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_avss_tree(str(tmp_path_factory.mktemp("avss_map") / "AVSS"))


def _dicts(root, split):
    return {d["uid"]: d for d in load_avss_split(root, split)}


def _mapper(augmentations=(), **kw):
    args = dict(is_train=False, augmentations=list(augmentations), image_format="RGB", pad_frames=10,
                pad_value=MEAN, audio_source="wav")
    args.update(kw)
    return AVSSClipMapper(**args)


def test_v1s_training_clip_is_padded_as_the_official_loader(tree):
    d = _dicts(tree, "train")["s_tr"]
    out = _mapper()(d)
    assert out["task"] == "avss" and out["subset"] == "v1s" and out["video_id"] == "s_tr"
    assert out["images"].shape == (10, 3, HEIGHT, WIDTH) and out["images"].dtype == torch.uint8
    # padded frames: the pixel mean (zero after normalisation, as the official zero tensor)
    assert (out["images"][5:] == torch.tensor([124, 116, 104], dtype=torch.uint8)[:, None, None]).all()
    assert out["frame_valid"].tolist() == [True] * 5 + [False] * 5
    assert out["mask_valid"].tolist() == [True] + [False] * 9  # v1s train: frame 0 only
    assert out["sem_seg"].dtype == torch.int64 and out["sem_seg"].shape == (10, HEIGHT, WIDTH)
    np.testing.assert_array_equal(out["sem_seg"][0].numpy(), class_map("s_tr", 0, 71))
    assert (out["sem_seg"][1:] == 255).all()
    expected_audio = wav_file_to_examples(d["audio_wav_file"], num_examples=5)
    torch.testing.assert_close(out["audio"][:5], expected_audio, rtol=0, atol=0)
    assert out["audio"].shape == (10, 1, 96, 64) and (out["audio"][5:] == 0).all()
    assert out["frame_files"][5:] == [None] * 5 and out["label_files"][1:] == [None] * 9


def test_test_clips_v1s_and_v2(tree):
    dicts = _dicts(tree, "test")
    s = _mapper()(dicts["s_te"])
    assert s["mask_valid"].tolist() == [True] * 5 + [False] * 5  # every real frame labelled at test time
    for t in range(5):
        np.testing.assert_array_equal(s["sem_seg"][t].numpy(), class_map("s_te", t, 71))
    n = _mapper()(dicts["n_te"])
    assert n["frame_valid"].all() and n["mask_valid"].all() and (n["sem_seg"] != 255).all()
    assert (n["audio"].abs().sum(dim=(1, 2, 3)) > 0).all()
    # 5- and 10-frame clips map to the same shapes, so they share a batch
    torch.stack([s["images"], n["images"]])
    torch.stack([s["audio"], n["audio"]])
    torch.stack([s["sem_seg"], n["sem_seg"]])


def test_one_augmentation_for_all_frames_and_labels(tree):
    d = _dicts(tree, "test")["m_te"]
    out = _mapper([T.RandomFlip(prob=1.0, horizontal=True)])(d)
    plain = _mapper()(d)
    torch.testing.assert_close(out["images"][:5], plain["images"][:5].flip(-1), rtol=0, atol=0)
    torch.testing.assert_close(out["sem_seg"], plain["sem_seg"].flip(-1), rtol=0, atol=0)


def test_from_config_and_registry(tree):
    cfg = get_cfg()
    add_aqformer_config(cfg)
    cfg.INPUT.DATASET_MAPPER_NAME = "AVSSClipMapper"
    cfg.INPUT.IMAGE_SIZE = 32
    cfg.INPUT.AUDIO.SOURCE = "wav"
    cfg.INPUT.AUDIO.ZERO_INPUT = True
    mapper = AQ_DATASET_MAPPER_REGISTRY.get(cfg.INPUT.DATASET_MAPPER_NAME)(cfg, False)
    out = mapper(_dicts(tree, "test")["n_te"])
    assert out["images"].shape == (10, 3, 32, 32) and out["sem_seg"].shape == (10, 32, 32)
    assert (out["audio"] == 0).all()


def test_pad_frames_shorter_than_a_clip_is_refused(tree):
    with pytest.raises(ValueError, match="has 10 frames, more than INPUT.AVSS.PAD_FRAMES = 5"):
        _mapper(pad_frames=5)(_dicts(tree, "test")["n_te"])
    out = _mapper(pad_frames=5)(_dicts(tree, "test")["s_te"])  # v1s alone without padding
    assert out["frame_valid"].all() and out["images"].shape[0] == 5


def test_unreadable_audio_and_bad_label_colour_name_the_file(tree, tmp_path):
    root = str(tmp_path / "copy")
    shutil.copytree(tree, root)
    wav = os.path.join(root, "v1m", "m_te", "audio.wav")
    with open(wav, "wb") as f:
        f.write(b"RIFF\x00\x00garbage")
    d = _dicts(root, "test")
    with pytest.raises(ValueError, match=f"{wav}: cannot read audio"):
        _mapper()(d["m_te"])
    lab = os.path.join(root, "v2", "n_te", "labels_rgb", "9.png")
    rgb = np.array(Image.open(lab).convert("RGB"))
    rgb[11, 15] = (7, 7, 7)
    Image.fromarray(rgb).save(lab)
    with pytest.raises(AVSSLayoutError, match=r"9\.png: colour\(s\) not in the 71-class palette: RGB\(7, 7, 7\) .*row 11, column 15"):
        _mapper()(d["n_te"])
