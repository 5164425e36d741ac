"""AVSClipMapper: clip dict contents, one geometry for all frames and masks, audio loading, errors."""
import copy
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T

from aqformer_d2 import add_aqformer_config
from aqformer_d2.data.dataset_mappers import AVSClipMapper, build_aq_dataset_mapper
from aqformer_d2.data.dataset_mappers.avs_clip_mapper import check_frame_sizes
from aqformer_d2.data.datasets import load_avs_layout_split, register_avs_layout
from aqformer_d2.utils.safe_pickle import UnsafePickleError

from .test_register_avsbench import unique_prefix, write_avs_tree

SIZE = 16
CLIP_KEYS = {"images", "audio", "height", "width", "video_id", "frame_files", "mask_files"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A small AVSBench tree (frames 24x32) registered under a unique prefix: {split/task key: dicts}."""
    root = str(tmp_path_factory.mktemp("avs"))
    audio = write_avs_tree(root)
    prefix = unique_prefix()
    register_avs_layout(prefix, root, "s4")
    register_avs_layout(prefix, root, "ms3")
    return {
        "audio": audio,
        "s4_train": DatasetCatalog.get(f"{prefix}_s4_train")[0],
        "s4_test": DatasetCatalog.get(f"{prefix}_s4_test")[0],
        "ms3_train": DatasetCatalog.get(f"{prefix}_ms3_train")[0],
    }


def make_cfg(**overrides):
    cfg = get_cfg()
    add_aqformer_config(cfg)
    cfg.INPUT.IMAGE_SIZE = SIZE
    cfg.INPUT.FORMAT = "RGB"  # detectron2's default is "BGR"; AQFormer's configs use RGB
    for k, v in overrides.items():
        node = cfg
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return cfg


def mapper(augs, audio_source="logmel"):
    return AVSClipMapper(
        is_train=True, augmentations=augs, image_format="RGB", num_frames=5, audio_source=audio_source
    )


def test_clip_dict_s4_train(tree):
    m = build_aq_dataset_mapper(make_cfg(), is_train=False)
    assert isinstance(m, AVSClipMapper)
    d = tree["s4_train"]
    out = m(d)
    assert set(out) == CLIP_KEYS | {"masks", "mask_valid"}
    assert out["images"].dtype == torch.uint8 and out["images"].shape == (5, 3, SIZE, SIZE)
    assert out["audio"].dtype == torch.float32 and out["audio"].shape == (5, 1, 96, 64)
    torch.testing.assert_close(out["audio"], tree["audio"]["s4vidA"], rtol=0, atol=0)
    assert (out["height"], out["width"]) == (24, 32)
    assert out["video_id"] == "s4vidA" and out["frame_files"] == d["frame_files"] and out["mask_files"] == d["mask_files"]
    # only mask 1 exists in S4 train
    assert out["mask_valid"].dtype == torch.bool and out["mask_valid"].tolist() == [True, False, False, False, False]
    assert out["masks"].dtype == torch.uint8 and out["masks"].shape == (5, SIZE, SIZE)
    assert out["masks"][1:].sum() == 0
    # left third (32 // 3 = 10 of 32 columns) foreground -> columns 0..4 of 16 after a nearest resize
    assert out["masks"][0, :, :4].all() and not out["masks"][0, :, 6:].any()
    assert set(out["masks"].unique().tolist()) <= {0, 1}
    # frame t carries 40 * t in channel 1 (RGB order kept)
    assert [int(out["images"][t, 1].float().mean()) for t in range(5)] == [0, 40, 80, 120, 160]
    # RGB order: red is the left-to-right ramp, blue = 30 * video index = 0 for s4vidA
    assert (out["images"][:, 0, :, -1] > out["images"][:, 0, :, 0]).all() and out["images"][:, 2].eq(0).all()


def test_clip_dict_ms3_palette_masks(tree):
    out = build_aq_dataset_mapper(make_cfg(), is_train=False)(tree["ms3_train"])
    assert out["mask_valid"].all()
    assert out["masks"][:, :, :4].all() and not out["masks"][:, :, 6:].any()


def test_clip_without_masks_has_no_mask_keys(tree):
    d = copy.deepcopy(tree["s4_test"])
    d["mask_files"] = [None] * 5
    out = build_aq_dataset_mapper(make_cfg(), is_train=False)(d)
    assert set(out) == CLIP_KEYS


def test_forced_flip_applies_to_every_frame_and_mask(tree):
    d = tree["s4_test"]
    base = mapper([T.Resize((SIZE, SIZE))])(d)
    out = mapper([T.Resize((SIZE, SIZE)), T.RandomFlip(prob=1.0)])(d)
    assert torch.equal(out["images"], base["images"].flip(-1))
    assert torch.equal(out["masks"], base["masks"].flip(-1))
    assert not torch.equal(out["images"], base["images"])  # the content is not flip-symmetric


def _flip_state(x, base):
    """+1 if x == base flipped horizontally, 0 if x == base, else fail."""
    if torch.equal(x, base.flip(-1)):
        return 1
    assert torch.equal(x, base), "frame / mask is neither the original nor its horizontal flip"
    return 0


def test_random_flip_is_drawn_once_per_clip(tree):
    d = tree["s4_test"]
    cfg = make_cfg()
    base = build_aq_dataset_mapper(cfg, is_train=False)(d)
    train = build_aq_dataset_mapper(cfg, is_train=True)
    seen = set()
    for seed in range(40):
        np.random.seed(seed)
        out = train(d)
        states = {_flip_state(out["images"][t], base["images"][t]) for t in range(5)}
        states |= {_flip_state(out["masks"][t], base["masks"][t]) for t in range(5)}
        assert len(states) == 1, f"seed {seed}: frames/masks flipped inconsistently"
        seen |= states
    assert seen == {0, 1}


def test_random_crop_is_identical_for_all_frames(tree):
    d = tree["ms3_train"]  # 5 masks; every frame has the same geometry (channel 0 ramp, same mask)
    cfg = make_cfg(**{"INPUT.CROP.ENABLED": True, "INPUT.CROP.TYPE": "relative_range", "INPUT.CROP.SIZE": [0.5, 0.5]})
    train = build_aq_dataset_mapper(cfg, is_train=True)
    crops = set()
    for seed in range(20):
        np.random.seed(seed)
        out = train(d)
        assert out["images"].shape == (5, 3, SIZE, SIZE) and out["masks"].shape == (5, SIZE, SIZE)
        geo = out["images"][:, 0]  # [T, H, W]
        assert all(torch.equal(geo[t], geo[0]) for t in range(5)), f"seed {seed}: frames cropped differently"
        assert all(torch.equal(out["masks"][t], out["masks"][0]) for t in range(5)), f"seed {seed}: masks differ"
        crops.add(tuple(geo[0].flatten().tolist()))
    assert len(crops) > 3  # the crop really is random across clips


def test_audio_from_numpy_pickle(tree, tmp_path):
    d = copy.deepcopy(tree["s4_test"])
    arr = np.random.RandomState(0).randn(5, 1, 96, 64).astype(np.float64)
    d["audio_logmel_file"] = str(tmp_path / "np.pkl")
    with open(d["audio_logmel_file"], "wb") as f:
        pickle.dump(arr, f)
    out = mapper([T.Resize((SIZE, SIZE))])(d)
    assert out["audio"].dtype == torch.float32
    np.testing.assert_allclose(out["audio"].numpy(), arr.astype(np.float32))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tree, tmp_path):
    d = copy.deepcopy(tree["s4_test"])
    marker = tmp_path / "pwned"
    d["audio_logmel_file"] = str(tmp_path / "evil.pkl")
    with open(d["audio_logmel_file"], "wb") as f:
        pickle.dump(_Evil(marker), f)
    with pytest.raises(UnsafePickleError) as e:
        mapper([T.Resize((SIZE, SIZE))])(d)
    assert d["audio_logmel_file"] in str(e.value)
    assert not marker.exists()


def test_audio_with_wrong_shape(tree, tmp_path):
    d = copy.deepcopy(tree["s4_test"])
    d["audio_logmel_file"] = str(tmp_path / "short.pkl")
    with open(d["audio_logmel_file"], "wb") as f:
        pickle.dump(torch.zeros(4, 1, 96, 64), f)
    with pytest.raises(ValueError, match="short.pkl.*\\[4, 1, 96, 64\\]"):
        mapper([T.Resize((SIZE, SIZE))])(d)


def test_audio_from_wav(tree):
    out = build_aq_dataset_mapper(make_cfg(**{"INPUT.AUDIO.SOURCE": "wav"}), is_train=False)(tree["ms3_train"])
    assert out["audio"].shape == (5, 1, 96, 64) and out["audio"].dtype == torch.float32
    assert torch.isfinite(out["audio"]).all()


def test_unreadable_and_mismatched_images(tree, tmp_path):
    m = mapper([T.Resize((SIZE, SIZE))])
    d = copy.deepcopy(tree["s4_test"])
    bad = tmp_path / "garbage.png"
    bad.write_bytes(b"not a png at all")
    d["frame_files"][2] = str(bad)
    with pytest.raises(OSError, match="garbage.png"):
        m(d)

    d = copy.deepcopy(tree["s4_test"])
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(small)
    d["frame_files"][4] = str(small)
    with pytest.raises(ValueError, match="small.png"):
        m(d)

    d = copy.deepcopy(tree["s4_test"])
    small_mask = tmp_path / "small_mask.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(small_mask)
    d["mask_files"][1] = str(small_mask)
    with pytest.raises(ValueError, match="small_mask.png"):
        m(d)

    d = copy.deepcopy(tree["s4_test"])
    d["frame_files"] = d["frame_files"][:4]
    with pytest.raises(ValueError, match="T = 5"):
        m(d)


ODD_VIDEO = "-xte0AbCdEf"


def _odd_frame_clip(root, frame_sizes):
    """An S4 test clip named ODD_VIDEO written with 224x224 frames and masks, then frame i (1-based) of
    ``frame_sizes`` {i: (H, W)} rewritten at that size; loaded by the real registration code, so its
    height/width are read from frame 1. Returns the dataset dict."""
    write_avs_tree(root, s4=((ODD_VIDEO, "0", "dog", "test"),), ms3=None, hw=(224, 224))
    d = load_avs_layout_split(root, "s4", "test")[0]
    for i, (h, w) in frame_sizes.items():
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(d["frame_files"][i - 1])
    return load_avs_layout_split(root, "s4", "test")[0]


def _frame_lines(message):
    return [line.strip() for line in message.splitlines()[1:]]


def test_odd_first_frame_is_named_with_every_frame_size(tmp_path):
    """A 100x60 (WxH) ..._1.png among 224x224 frames 2-5: the dataset dict says 60x100 (from frame 1), and
    the error must blame frame 1, not frame 2, and list all 5 frames with their HxW."""
    d = _odd_frame_clip(str(tmp_path), {1: (60, 100)})
    assert (d["height"], d["width"]) == (60, 100)
    with pytest.raises(ValueError) as e:
        mapper([T.Resize((SIZE, SIZE))])(d)
    msg = str(e.value)
    first = msg.splitlines()[0]
    assert ODD_VIDEO in first and "odd one(s) out (the others are 224x224)" in first
    assert f"{d['frame_files'][0]} (60x100)" in first and d["frame_files"][1] not in first
    sizes = ["60x100"] + ["224x224"] * 4
    marks = ["  <-- odd one out"] + [""] * 4
    assert _frame_lines(msg) == [f"{p}: {s}{m}".strip() for p, s, m in zip(d["frame_files"], sizes, marks)]


def test_odd_middle_frames_are_the_minority(tmp_path):
    d = _odd_frame_clip(str(tmp_path), {2: (100, 60), 4: (100, 60)})
    with pytest.raises(ValueError) as e:
        mapper([T.Resize((SIZE, SIZE))])(d)
    first = str(e.value).splitlines()[0]
    assert f"{d['frame_files'][1]} (100x60), {d['frame_files'][3]} (100x60)" in first
    assert all(d["frame_files"][t] not in first for t in (0, 2, 4))
    assert [line.endswith("<-- odd one out") for line in _frame_lines(str(e.value))] == [
        False, True, False, True, False]


def test_frame_sizes_without_a_majority_list_every_frame():
    files = [f"/v/f_{i}.png" for i in range(1, 6)]
    sizes = [(10, 10), (10, 10), (20, 20), (20, 20), (30, 30)]
    with pytest.raises(ValueError, match="no size is shared by a majority") as e:
        check_frame_sizes("v", files, sizes, (10, 10))
    assert _frame_lines(str(e.value)) == [f"{p}: {h}x{w}" for p, (h, w) in zip(files, sizes)]


def test_frames_that_agree_but_not_with_the_dataset_dict():
    files = [f"/v/f_{i}.png" for i in range(1, 6)]
    check_frame_sizes("v", files, [(24, 32)] * 5, (24, 32))  # consistent: no error
    with pytest.raises(ValueError, match=r"all 5 frames are 24x32 \(HxW\), but the dataset dict says 32x24"):
        check_frame_sizes("v", files, [(24, 32)] * 5, (32, 24))


def test_mask_of_another_size_than_its_frames(tmp_path):
    d = _odd_frame_clip(str(tmp_path), {})
    Image.fromarray(np.zeros((60, 100), np.uint8)).save(d["mask_files"][2])
    with pytest.raises(ValueError) as e:
        mapper([T.Resize((SIZE, SIZE))])(d)
    assert str(e.value) == f"Mask {d['mask_files'][2]} is 60x100 (HxW), but its frames are 224x224."
