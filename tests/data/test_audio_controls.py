"""Audio control experiments: swapped-audio datasets and zeroed audio input."""
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from aqformer_d2 import add_aqformer_config
from aqformer_d2.data import build_aq_dataset_mapper
from aqformer_d2.data.datasets import register_audio_swapped, register_avs_layout, swap_audio
from aqformer_d2.data.datasets.audio_controls import derangement
from aqformer_d2.data.synthavs import generate_synthavs


@pytest.mark.parametrize("n", [2, 3, 10, 57])
def test_derangement_has_no_fixed_point_and_is_a_permutation(n):
    perm = derangement(n, seed=n)
    assert sorted(perm.tolist()) == list(range(n))
    assert (perm != np.arange(n)).all()


def test_derangement_needs_two_clips():
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1, seed=0)


def test_swap_audio_moves_only_audio_paths():
    dicts = [{"video_id": f"v{i}", "audio_logmel_file": f"a{i}.pkl", "audio_wav_file": f"a{i}.wav",
              "frame_files": [f"f{i}.png"]} for i in range(5)]
    swapped = swap_audio(dicts, seed=3)
    for orig, new in zip(dicts, swapped):
        assert new["frame_files"] == orig["frame_files"] and new["video_id"] == orig["video_id"]
        assert new["audio_logmel_file"] != orig["audio_logmel_file"]
        donor = new["audio_from_video_id"]
        assert new["audio_logmel_file"] == f"a{donor[1:]}.pkl" and new["audio_wav_file"] == f"a{donor[1:]}.wav"
    assert dicts[0]["audio_logmel_file"] == "a0.pkl"  # input not modified


def test_swap_audio_keeps_clip_lengths_and_s4_ms3_permutation():
    """AVSS mixes 5- and 10-frame clips: each clip's donor has as many frames (its audio has one example per
    frame); datasets of one length (S4 / MS3, or dicts without num_frames) keep derangement(n, seed)."""
    lengths = [5, 10, 5, 10, 10, 5, 5]
    dicts = [{"video_id": f"v{i}", "audio_logmel_file": f"a{i}.pkl", "audio_wav_file": f"a{i}.wav",
              "num_frames": n} for i, n in enumerate(lengths)]
    swapped = swap_audio(dicts, seed=4)
    donors = [int(d["audio_from_video_id"][1:]) for d in swapped]
    assert sorted(donors) == list(range(len(lengths)))
    assert all(j != i and lengths[j] == lengths[i] for i, j in enumerate(donors))
    for with_len in (True, False):
        same = [{k: v for k, v in d.items() if with_len or k != "num_frames"} for d in dicts[:5]]
        for d in same:
            d["num_frames"] = 5 if with_len else d.get("num_frames")
        got = [int(d["audio_from_video_id"][1:]) for d in swap_audio(same, seed=4)]
        assert got == derangement(5, 4).tolist()
    with pytest.raises(ValueError, match="num_frames=10"):
        swap_audio(dicts[:3], seed=0)  # one 10-frame clip cannot be swapped


@pytest.fixture(scope="module")
def tiny_synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_synthavs(str(root), variant="s4", seed=1, n_train=2, n_val=2, n_test=3, image_size=32)
    register_avs_layout("ctrltest", str(root), "s4")
    return root


def test_registered_swapped_dataset_and_zero_audio_mapper(tiny_synth):
    name = register_audio_swapped("ctrltest_s4_test", seed=0)
    assert name == "ctrltest_s4_test_audioswap"
    assert MetadataCatalog.get(name).evaluator_type == "avs"
    orig, swapped = DatasetCatalog.get("ctrltest_s4_test"), DatasetCatalog.get(name)
    assert [d["video_id"] for d in orig] == [d["video_id"] for d in swapped]
    assert all(o["audio_logmel_file"] != s["audio_logmel_file"] for o, s in zip(orig, swapped))

    cfg = get_cfg()
    add_aqformer_config(cfg)
    cfg.INPUT.IMAGE_SIZE = 32
    normal = build_aq_dataset_mapper(cfg, is_train=False)(orig[0])
    cfg.INPUT.AUDIO.ZERO_INPUT = True
    zeroed = build_aq_dataset_mapper(cfg, is_train=False)(orig[0])
    assert normal["audio"].abs().sum() > 0
    assert torch.equal(zeroed["audio"], torch.zeros(5, 1, 96, 64))
    assert torch.equal(zeroed["images"], normal["images"])


def test_swap_audio_pathways_keeps_own_audio_and_names_the_donor_per_pathway():
    dicts = [{"video_id": f"v{i}", "audio_logmel_file": f"a{i}.pkl", "audio_wav_file": f"a{i}.wav"} for i in range(4)]
    plain = swap_audio(dicts, seed=2)
    partial = swap_audio(dicts, seed=2, pathways=["query", "pixel"])
    for orig, p, new in zip(dicts, plain, partial):
        assert new["audio_logmel_file"] == orig["audio_logmel_file"]  # own audio kept
        assert new["audio_from_video_id"] == p["audio_from_video_id"]  # same derangement as the plain swap
        assert set(new["pathway_audio_files"]) == {"pixel", "query"}
        for files in new["pathway_audio_files"].values():
            assert files == {"audio_logmel_file": p["audio_logmel_file"], "audio_wav_file": p["audio_wav_file"]}
    for bad in (["decoder"], [], ["abti", "abti"]):
        with pytest.raises(ValueError, match="pathways must be distinct names"):
            swap_audio(dicts, seed=0, pathways=bad)


def test_registered_pathway_swap_and_mapper_load_the_donor_audio(tiny_synth):
    name = register_audio_swapped("ctrltest_s4_test", seed=0, pathways=("abti",))
    assert name == "ctrltest_s4_test_audioswap_abti"
    assert MetadataCatalog.get(name).audio_swap_pathways == ["abti"]
    orig, partial, full = DatasetCatalog.get("ctrltest_s4_test"), DatasetCatalog.get(name), DatasetCatalog.get(
        register_audio_swapped("ctrltest_s4_test", seed=0))
    cfg = get_cfg()
    add_aqformer_config(cfg)
    cfg.INPUT.IMAGE_SIZE = 32
    mapper = build_aq_dataset_mapper(cfg, is_train=False)
    own, mixed, donor = mapper(orig[0]), mapper(partial[0]), mapper(full[0])
    assert "pathway_audio" not in own and set(mixed["pathway_audio"]) == {"abti"}
    assert torch.equal(mixed["audio"], own["audio"])
    assert torch.equal(mixed["pathway_audio"]["abti"], donor["audio"])
    assert not torch.equal(donor["audio"], own["audio"])
