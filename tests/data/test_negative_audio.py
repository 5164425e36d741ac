"""Negative audio in the data layer: specs, off-screen sounds, SynthAVS categories, the mapper (evaluation
specs and training draws from the resumable stream), negative-audio datasets."""
import json
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog

from aqformer_d2.audio.io import read_wav
from aqformer_d2.audio.negatives import rms
from aqformer_d2.data import build_aq_dataset_mapper
from aqformer_d2.data.build import SeededClipDataset
from aqformer_d2.data.datasets import (
    negative_dataset_name, pathway_negative_dataset_name, register_all_synthavs, register_negative_audio,
    register_pathway_negative_audio, with_negative_audio, with_pathway_negative_audio,
)
from aqformer_d2.data.negative_audio import (
    NEGATIVE_KINDS, NegativeAudioSampler, check_negative_spec, negative_examples, negative_waveform, offscreen_category,
    offscreen_category_of,
)
from aqformer_d2.data.synthavs import CLIPS_METADATA_NAME, generate_synthavs

from .test_avs_clip_mapper import make_cfg as make_mapper_cfg

SIZE = 32


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthavs"))
    generate_synthavs(root, variant="both", seed=2, n_train=4, n_val=1, n_test=3, image_size=SIZE, num_categories=8)
    register_all_synthavs(root)
    return root


def make_cfg(**overrides):
    return make_mapper_cfg(**{"INPUT.IMAGE_SIZE": SIZE, **overrides})


def test_synthavs_dicts_carry_every_object_category(synth):
    for task, sub in (("s4", "Single-source"), ("ms3", "Multi-sources")):
        with open(os.path.join(synth, sub, CLIPS_METADATA_NAME)) as fh:
            records = {r["name"]: r for r in map(json.loads, fh)}
        dicts = DatasetCatalog.get(f"synthavs_{task}_test")
        assert len(dicts) == 3
        for d in dicts:
            objects = records[d["video_id"]]["objects"]
            assert d["synthavs_category_ids"] == [o["category_id"] for o in objects]
            assert d["synthavs_num_categories"] == 8
            assert d["synthavs_snr_db"] == json.load(open(os.path.join(synth, "synthavs_manifest.json")))["params"]["snr_db"]
            # silent objects are included, not only the sounding ones
            assert len(d["synthavs_category_ids"]) > sum(any(o["sounding"]) for o in objects)


def test_offscreen_category_is_never_on_screen_and_covers_the_rest():
    onscreen = [0, 3, 5]
    rng = np.random.default_rng(0)
    drawn = {offscreen_category(rng, onscreen, 8) for _ in range(200)}
    assert drawn == {1, 2, 4, 6, 7}
    with pytest.raises(ValueError, match="no off-screen category"):
        offscreen_category(rng, range(8), 8)


@pytest.mark.parametrize("kind", ["offscreen", "offscreen_scene"])
def test_offscreen_category_of_names_the_sound_the_waveform_plays(synth, kind, monkeypatch):
    """The category :func:`offscreen_category_of` names is the one whose sound :func:`negative_waveform`
    synthesises, for every clip and many seeds (it fails if the maker's order of draws changes)."""
    from aqformer_d2.data import negative_audio

    played = []
    real = negative_audio.category_sound
    monkeypatch.setattr(negative_audio, "category_sound", lambda c, rng, n: played.append(c) or real(c, rng, n))
    named = []
    for d in DatasetCatalog.get("synthavs_s4_test") + DatasetCatalog.get("synthavs_ms3_test"):
        for seed in range(12):
            spec = {"kind": kind, "level_db": 0.0, "seed": seed}
            named.append(offscreen_category_of(spec, d))
            negative_waveform(spec, clip_rms=0.1, num_samples=16000, dataset_dict=d)
            assert named[-1] not in d["synthavs_category_ids"]
    assert played == named and len(set(named)) > 1
    with pytest.raises(ValueError, match="plays no off-screen category"):
        offscreen_category_of({"kind": "white_noise", "level_db": 0.0, "seed": 1}, d)
    with pytest.raises(ValueError, match="needs the SynthAVS description"):
        offscreen_category_of({"kind": kind, "level_db": 0.0, "seed": 1}, {"video_id": "v"})


@pytest.mark.parametrize("spec,match", [
    ({"kind": "noise", "level_db": 0.0, "seed": 1}, "not one of"),
    ({"kind": "silence", "level_db": 0.0, "seed": 1}, "silence takes level_db None"),
    ({"kind": "white_noise", "level_db": None, "seed": 1}, "silence takes level_db None"),
    ({"kind": "white_noise", "level_db": 0.0}, "keys"),
    ({"kind": "white_noise", "level_db": 0.0, "seed": -1}, "seed"),
])
def test_bad_specs_are_refused(spec, match):
    with pytest.raises(ValueError, match=match):
        check_negative_spec(spec)


def test_levels_are_relative_to_the_clip_and_offscreen_is_as_loud(synth):
    d = DatasetCatalog.get("synthavs_s4_test")[0]
    wav, sr = read_wav(d["audio_wav_file"])
    clip_rms = rms(wav)
    assert clip_rms > 0
    for kind in ("white_noise", "pink_noise", "brown_noise"):
        loud = negative_waveform({"kind": kind, "level_db": 0.0, "seed": 7}, clip_rms=clip_rms, num_samples=80000)
        quiet = negative_waveform({"kind": kind, "level_db": -20.0, "seed": 7}, clip_rms=clip_rms, num_samples=80000)
        assert rms(loud) == pytest.approx(clip_rms, rel=1e-12) and rms(quiet) == pytest.approx(clip_rms / 10, rel=1e-12)
    off = negative_waveform({"kind": "offscreen", "level_db": 0.0, "seed": 7}, clip_rms=clip_rms, num_samples=80000,
                            dataset_dict=d)
    assert rms(off) == pytest.approx(clip_rms, rel=1e-12)
    with pytest.raises(ValueError, match="off-screen negative .* needs the SynthAVS description"):
        bare = {k: v for k, v in d.items() if not k.startswith("synthavs_")}
        negative_waveform({"kind": "offscreen", "level_db": 0.0, "seed": 7}, clip_rms=0.1, num_samples=80000,
                          dataset_dict=bare)


def test_offscreen_scene_is_the_offscreen_source_over_the_background_noise(synth):
    """Same draws as "offscreen" (same absent category, same source), plus background noise snr_db below the
    source, as the generator mixes a soundtrack; as loud as the clip."""
    d = DatasetCatalog.get("synthavs_s4_test")[0]
    snr_db = d["synthavs_snr_db"]
    assert snr_db is not None
    spec = {"kind": "offscreen_scene", "level_db": 0.0, "seed": 11}
    scene = negative_waveform(spec, clip_rms=0.2, num_samples=80000, dataset_dict=d)
    alone = negative_waveform(dict(spec, kind="offscreen"), clip_rms=0.2, num_samples=80000, dataset_dict=d)
    assert rms(scene) == pytest.approx(0.2, rel=1e-12)
    # scene = a (source + g noise), alone = b source: split scene into its source part and the rest
    along = float(np.dot(scene, alone) / np.dot(alone, alone)) * alone
    noise_over_source = rms(scene - along) / rms(along)
    # source and noise are independent draws of 80000 samples: their correlation is O(1/sqrt(80000)) = 0.4 %
    assert noise_over_source == pytest.approx(10.0 ** (-snr_db / 20.0), rel=0.05)
    assert negative_waveform(spec, clip_rms=0.2, num_samples=80000, dataset_dict=d).tobytes() == scene.tobytes()
    no_noise = negative_waveform(spec, clip_rms=0.2, num_samples=80000, dataset_dict=dict(d, synthavs_snr_db=None))
    np.testing.assert_allclose(no_noise, alone, rtol=0, atol=1e-12)
    bare = {k: v for k, v in d.items() if k != "synthavs_snr_db"}
    with pytest.raises(ValueError, match="'offscreen_scene'.*synthavs_snr_db"):
        negative_waveform(spec, clip_rms=0.2, num_samples=80000, dataset_dict=bare)


def test_negative_examples_are_seeded_and_differ_by_kind(synth):
    d = DatasetCatalog.get("synthavs_ms3_test")[1]
    out = {}
    for kind in NEGATIVE_KINDS:
        level = None if kind == "silence" else 0.0
        a = negative_examples(d, {"kind": kind, "level_db": level, "seed": 5}, 5)
        b = negative_examples(d, {"kind": kind, "level_db": level, "seed": 5}, 5)
        assert a.shape == (5, 1, 96, 64) and a.dtype == torch.float32 and torch.equal(a, b)
        out[kind] = a
    kinds = list(out)
    for i, k in enumerate(kinds):
        for other in kinds[i + 1:]:
            assert not torch.equal(out[k], out[other]), (k, other)


def test_mapper_applies_a_dataset_spec_with_empty_masks(synth):
    m = build_aq_dataset_mapper(make_cfg(), is_train=False)
    d = DatasetCatalog.get("synthavs_s4_train")[0]  # S4 train: only frame 1 is labelled
    pos = m(d)
    neg_dict = dict(d, negative_audio={"kind": "pink_noise", "level_db": -20.0, "seed": 3})
    neg = m(neg_dict)
    assert pos["masks"].sum() > 0 and neg["masks"].sum() == 0 and neg["masks"].shape == pos["masks"].shape
    assert neg["mask_valid"].tolist() == pos["mask_valid"].tolist() == [True, False, False, False, False]
    assert torch.equal(neg["images"], pos["images"])
    assert not torch.equal(neg["audio"], pos["audio"])
    assert torch.equal(neg["audio"], negative_examples(d, neg_dict["negative_audio"], 5))
    assert neg["negative_audio"] == neg_dict["negative_audio"] and "negative_audio" not in pos
    with pytest.raises(ValueError, match="pathway"):
        m(dict(neg_dict, pathway_audio_files={"abti": {}}))


def test_training_negatives_are_a_function_of_the_stream_position(synth):
    """PROB 0.5: the same (seed, position) gives the same clip bitwise; positions differ in whether and how
    the clip is negative; the augmentation draw (flip) is the one of the run without negatives."""
    dicts = DatasetCatalog.get("synthavs_ms3_train")
    plain = SeededClipDataset(dicts, build_aq_dataset_mapper(make_cfg(), is_train=True), seed=9)
    cfg = make_cfg(**{"INPUT.NEGATIVE_AUDIO.PROB": 0.5,
                      "INPUT.NEGATIVE_AUDIO.KINDS": list(NEGATIVE_KINDS), "INPUT.NEGATIVE_AUDIO.LEVELS_DB": [0.0, -20.0]})
    with_neg = SeededClipDataset(dicts, build_aq_dataset_mapper(cfg, is_train=True), seed=9)
    again = SeededClipDataset(dicts, build_aq_dataset_mapper(cfg, is_train=True), seed=9)
    kinds = []
    for position in range(16):
        item = (position, position % len(dicts))
        a, b, p = with_neg[item], again[item], plain[item]
        assert torch.equal(a["audio"], b["audio"]) and torch.equal(a["masks"], b["masks"])
        assert a.get("negative_audio") == b.get("negative_audio")
        assert torch.equal(a["images"], p["images"]) and torch.equal(a["mask_valid"], p["mask_valid"])
        if "negative_audio" in a:
            kinds.append(a["negative_audio"]["kind"])
            assert a["masks"].sum() == 0 and not torch.equal(a["audio"], p["audio"])
        else:
            assert torch.equal(a["audio"], p["audio"]) and torch.equal(a["masks"], p["masks"])
    assert 3 <= len(kinds) <= 13, kinds  # Binomial(16, 0.5): outside [3, 13] with probability 0.4 %, seed fixed
    assert len(set(kinds)) >= 2
    # the mapper leaves the caller's generators as they were (SeededClipDataset restores them)
    state = np.random.get_state()[1].copy()
    with_neg[(3, 0)]
    assert np.array_equal(state, np.random.get_state()[1])


def test_prob_zero_builds_no_sampler_and_eval_mappers_never_draw():
    assert NegativeAudioSampler.from_config(make_cfg()) is None
    cfg = make_cfg(**{"INPUT.NEGATIVE_AUDIO.PROB": 1.0})
    assert build_aq_dataset_mapper(cfg, is_train=False).negative_audio is None
    assert build_aq_dataset_mapper(cfg, is_train=True).negative_audio is not None


def test_sampler_draws_every_kind_and_level_and_validates():
    s = NegativeAudioSampler(prob=1.0, kinds=NEGATIVE_KINDS, levels_db=[0.0, -20.0])
    rng = np.random.default_rng(0)
    specs = [s.draw(rng) for _ in range(300)]
    assert {x["kind"] for x in specs} == set(NEGATIVE_KINDS)
    assert {x["level_db"] for x in specs if x["kind"].endswith("noise")} == {0.0, -20.0}
    assert {x["level_db"] for x in specs if x["kind"].startswith("offscreen")} == {0.0}
    assert {x["level_db"] for x in specs if x["kind"] == "silence"} == {None}
    for spec in specs:
        check_negative_spec(spec)
    with pytest.raises(ValueError, match="PROB"):
        NegativeAudioSampler(prob=1.5, kinds=["silence"], levels_db=[])
    with pytest.raises(ValueError, match="KINDS"):
        NegativeAudioSampler(prob=0.5, kinds=["hum"], levels_db=[0.0])
    with pytest.raises(ValueError, match="LEVELS_DB is empty"):
        NegativeAudioSampler(prob=0.5, kinds=["white_noise"], levels_db=[])


def test_kind_weights_set_the_shares_of_the_kinds():
    kinds = ["silence", "white_noise", "offscreen_scene"]
    s = NegativeAudioSampler(prob=1.0, kinds=kinds, levels_db=[0.0], kind_weights=[1.0, 0.0, 3.0])
    rng = np.random.default_rng(0)
    n = 4000
    drawn = [s.draw(rng)["kind"] for _ in range(n)]
    # binomial share 0.75 of n = 4000 draws: standard deviation sqrt(0.75 * 0.25 / 4000) = 0.0068; 5 of them
    assert abs(drawn.count("offscreen_scene") / n - 0.75) < 0.035
    assert drawn.count("white_noise") == 0  # weight 0: never drawn
    assert drawn.count("silence") + drawn.count("offscreen_scene") == n
    # empty weights: uniform, the same draws as a sampler built without the argument
    a, b = NegativeAudioSampler(prob=0.5, kinds=kinds, levels_db=[0.0]), \
        NegativeAudioSampler(prob=0.5, kinds=kinds, levels_db=[0.0], kind_weights=[])
    ra, rb = np.random.default_rng(3), np.random.default_rng(3)
    assert [a.draw(ra) for _ in range(50)] == [b.draw(rb) for _ in range(50)]
    for bad in ([1.0, 2.0], [1.0, -1.0, 1.0], [0.0, 0.0, 0.0], [1.0, float("nan"), 1.0]):
        with pytest.raises(ValueError, match="KIND_WEIGHTS"):
            NegativeAudioSampler(prob=0.5, kinds=kinds, levels_db=[0.0], kind_weights=bad)
    cfg = make_cfg(**{"INPUT.NEGATIVE_AUDIO.PROB": 0.25, "INPUT.NEGATIVE_AUDIO.KIND_WEIGHTS": [1.0, 1.0, 1.0, 4.0]})
    assert "kind_shares=[0.1429, 0.1429, 0.1429, 0.5714]" in repr(NegativeAudioSampler.from_config(cfg))


def test_negative_audio_datasets(synth):
    name = register_negative_audio("synthavs_s4_test", "white_noise", -20.0, seed=1)
    assert name == negative_dataset_name("synthavs_s4_test", "white_noise", -20.0) == "synthavs_s4_test_neg_white_noise_m20db"
    assert register_negative_audio("synthavs_s4_test", "silence") == "synthavs_s4_test_neg_silence"
    dicts = DatasetCatalog.get(name)
    base = DatasetCatalog.get("synthavs_s4_test")
    assert [d["video_id"] for d in dicts] == [d["video_id"] for d in base]
    seeds = [d["negative_audio"]["seed"] for d in dicts]
    assert len(set(seeds)) == len(seeds)
    assert dicts == with_negative_audio(base, "white_noise", -20.0, seed=1)
    assert all("negative_audio" not in d for d in base)
    assert [d["negative_audio"]["seed"] for d in with_negative_audio(base, "white_noise", -20.0, seed=2)] != seeds


def test_pathway_negative_datasets_name_the_same_sound_and_the_mapper_routes_it(synth):
    """Negatives by pathway: the named pathways hear the all-pathway condition's sound (same spec), the others
    silence (empty masks) or the clip's own audio (own masks); the mapper puts each where it belongs."""
    base = DatasetCatalog.get("synthavs_s4_test")
    all_pathways = with_negative_audio(base, "offscreen_scene", 0.0, seed=1)
    name = register_pathway_negative_audio("synthavs_s4_test", "offscreen_scene", 0.0, ["query", "pixel"], seed=1)
    assert name == pathway_negative_dataset_name("synthavs_s4_test", "offscreen_scene", 0.0, ["pixel", "query"]) \
        == "synthavs_s4_test_neg_offscreen_scene_0db_in_pixel+query"
    dicts = DatasetCatalog.get(name)
    assert [d["video_id"] for d in dicts] == [d["video_id"] for d in base]
    for d, ref in zip(dicts, all_pathways):
        assert d["pathway_negative_audio"] == {"pixel": ref["negative_audio"], "query": ref["negative_audio"]}
        assert d["negative_audio"]["kind"] == "silence"
    own_name = register_pathway_negative_audio("synthavs_s4_test", "silence", None, ["abti"], elsewhere="own")
    assert own_name == "synthavs_s4_test_own_neg_silence_in_abti"
    own_dicts = DatasetCatalog.get(own_name)
    assert all("negative_audio" not in d and set(d["pathway_negative_audio"]) == {"abti"} for d in own_dicts)
    assert all("negative_audio" not in d and "pathway_negative_audio" not in d for d in base)

    m = build_aq_dataset_mapper(make_cfg(), is_train=False)
    d, pos = dicts[0], m(base[0])
    out = m(d)
    offscreen = negative_examples(d, all_pathways[0]["negative_audio"], 5)
    assert torch.equal(out["audio"], negative_examples(d, d["negative_audio"], 5))  # silence elsewhere
    assert set(out["pathway_audio"]) == {"pixel", "query"}
    assert all(torch.equal(x, offscreen) for x in out["pathway_audio"].values())
    assert not torch.equal(offscreen, out["audio"]) and out["masks"].sum() == 0 < pos["masks"].sum()
    own = m(own_dicts[0])
    assert torch.equal(own["audio"], pos["audio"]) and torch.equal(own["masks"], pos["masks"])
    assert list(own["pathway_audio"]) == ["abti"]
    assert torch.equal(own["pathway_audio"]["abti"], negative_examples(d, {"kind": "silence", "level_db": None, "seed": 0}, 5))

    with pytest.raises(ValueError, match=r"'pathway_negative_audio' names pathways \['decoder'\]"):
        m(dict(d, pathway_negative_audio={"decoder": d["pathway_negative_audio"]["query"]}))
    with pytest.raises(ValueError, match="a clip may carry one of them"):
        m(dict(own_dicts[0], pathway_audio_files={"pixel": {}}))
    with pytest.raises(ValueError, match="name the pathways"):
        with_pathway_negative_audio(base, "offscreen_scene", 0.0, None)
    with pytest.raises(ValueError, match="elsewhere"):
        with_pathway_negative_audio(base, "offscreen_scene", 0.0, ["query"], elsewhere="noise")
