"""bench.listening end to end on a 2-iteration tiny model (SynthAVS-S4, 32 px, 3 test clips): every condition
is evaluated and written, the numbers agree with the per-clip records, and the negatives really change the audio."""
import json
import os

import pytest
import torch

from aqformer_d2.engine import build_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import listening

CONFIG = os.path.join(REPO, "configs", "synthavs", "aqformer_tiny_s4.yaml")


def test_listening_bench_writes_every_condition(tiny_model, tmp_path):
    common, weights = tiny_model
    out = tmp_path / "out"
    summary = listening.main(["--config-file", CONFIG, "--weights", weights, "--levels-db", "0", "-20",
                              "--resamples", "50", "--threads", "1", "--output", str(out)] + common)
    names = ["own", "silence", "white_noise_0dB", "white_noise_-20dB", "pink_noise_0dB", "pink_noise_-20dB",
             "offscreen", "offscreen_scene", "swap"]
    assert list(summary) == names
    for name in names:
        row = summary[name]
        on_disk = json.load(open(out / f"{name}.json"))
        assert on_disk["summary"] == json.loads(json.dumps(row)) and len(on_disk["clips"]) == 3 == row["num_clips"]
        frames = [f for c in on_disk["clips"] for f in c["any_fg"]]
        assert row["foreground_frames"] == pytest.approx(sum(frames) / len(frames))
        lo, hi = row["foreground_frames_ci"]
        assert 0.0 <= lo <= row["foreground_frames"] <= hi <= 1.0
        assert row["negative"] == (name not in ("own", "swap"))
        assert ("mIoU" in row) == (not row["negative"]) and ("listening_score" in row) == row["negative"]
        if row["negative"]:
            assert all(c["negative"] and c["iou"] is None for c in on_disk["clips"])
            assert 0.0 <= row["listening_score"] <= 1.0
    assert set(json.load(open(out / "listening.json"))["summary"]) == set(names)
    assert open(out / "listening.md").read().count("\n| ") == len(names) + 1


def test_conditions_feed_the_model_different_audio(tiny_model):
    """The datasets of the conditions give the model different audio for the same clip (and the same frames)."""
    from detectron2.data import DatasetCatalog

    from aqformer_d2.data import build_aq_dataset_mapper
    from aqformer_d2.engine import condition_dataset, listening_conditions

    common, weights = tiny_model
    cfg = build_cfg(CONFIG, common)
    mapper = build_aq_dataset_mapper(cfg, is_train=False)
    clips = {c["name"]: mapper(DatasetCatalog.get(condition_dataset("synthavs_s4_test", c))[0])
             for c in listening_conditions()}
    names = list(clips)
    for i, a in enumerate(names):
        assert torch.equal(clips[a]["images"], clips["own"]["images"])
        for b in names[i + 1:]:
            assert not torch.equal(clips[a]["audio"], clips[b]["audio"]), (a, b)


def test_only_keeps_own_and_the_named_conditions(tiny_model, tmp_path):
    common, weights = tiny_model
    base = ["--config-file", CONFIG, "--weights", weights, "--resamples", "20", "--threads", "1"]
    summary = listening.main(base + ["--only", "offscreen_scene", "--output", str(tmp_path / "o")] + common)
    assert list(summary) == ["own", "offscreen_scene"]
    assert sorted(os.listdir(tmp_path / "o")) == ["listening.json", "listening.md", "offscreen_scene.json", "own.json"]
    with pytest.raises(SystemExit, match=r"no condition named \['brown_noise_0dB'\]"):
        listening.main(base + ["--only", "brown_noise_0dB", "--output", str(tmp_path / "x")] + common)


def test_every_condition_runs_on_synthavs_ms3(tiny_model, tmp_path):
    """The MS3 rows: every condition on SynthAVS-MS3 clips (4-5 objects, so the off-screen category is drawn from
    fewer absent ones; all frames labelled), with the MS3 config and the tiny model's weights (same architecture)."""
    from aqformer_d2.data.synthavs import generate_synthavs

    _, weights = tiny_model
    synth = str(tmp_path / "ms3")
    # seed 5: the first test clip has a second where nothing sounds (an empty mask), for own_empty_gt
    generate_synthavs(synth, variant="ms3", seed=5, n_train=1, n_val=1, n_test=2, image_size=32)
    ms3_config = os.path.join(REPO, "configs", "synthavs", "aqformer_tiny_ms3.yaml")
    summary = listening.main(["--config-file", ms3_config, "--weights", weights, "--levels-db", "0",
                              "--resamples", "20", "--threads", "1", "--output", str(tmp_path / "out"),
                              "DATASETS.SYNTHAVS_ROOT", synth, "INPUT.IMAGE_SIZE", "32"])
    assert list(summary) == ["own", "own_empty_gt", "silence", "white_noise_0dB", "pink_noise_0dB", "offscreen",
                             "offscreen_scene", "swap"]
    record = json.load(open(tmp_path / "out" / "listening.json"))
    assert all(row["num_clips"] == (1 if name == "own_empty_gt" else 2) for name, row in record["summary"].items())
    own = json.load(open(tmp_path / "out" / "own.json"))["clips"]
    assert [c["video_id"] for c in own] == ["synth_ms3_test_00000", "synth_ms3_test_00001"]
    assert all(len(c["any_fg"]) == 5 and c["iou"] is not None for c in own)  # every MS3 test frame is scored
    # own_empty_gt: exactly the test frames whose mask file is empty (MS3's seconds where nothing sounds)
    from aqformer_d2.data.datasets.register_avsbench import read_avs_mask
    from detectron2.data import DatasetCatalog

    empty = [not read_avs_mask(f).any() for d in DatasetCatalog.get("synthavs_ms3_test") for f in d["mask_files"]]
    assert [e for c in own for e in c["empty_gt"]] == empty
    assert sum(empty) == 1 and record["summary"]["own_empty_gt"]["num_frames"] == 1
    assert "own_empty_gt: the 1 frames (in 1 clips)" in open(tmp_path / "out" / "listening.md").read()


def test_min_area_rule_changes_exactly_the_small_frames(tiny_model, tmp_path):
    """--min-area A against the same model without it: per frame, the foreground share is kept when above A and
    0 otherwise, on negatives and on the own audio, where an emptied frame's IoU becomes 0 (SynthAVS-S4 frames
    all show their sounding object) and M_J follows."""
    import numpy as np

    common, weights = tiny_model
    common = common + ["MODEL.AQFORMER.MASK_THRESHOLD", "0.3"]  # the 2-iteration model's masks are mostly empty at 0.5
    base = ["--config-file", CONFIG, "--weights", weights, "--resamples", "20", "--threads", "1",
            "--only", "silence", "offscreen_scene"]
    plain = listening.main(base + ["--output", str(tmp_path / "plain")] + common)
    clips = lambda d, n: json.load(open(tmp_path / d / f"{n}.json"))["clips"]  # noqa: E731
    # the cut: the median of the non-empty frames' areas, so that some frames are emptied and some kept whatever
    # share of frames the 2-iteration model leaves empty (it varies with the CPU's round-off)
    areas = sorted(a for n in plain for c in clips("plain", n) for a in c["area"] if a > 0)
    assert len(areas) >= 2, "the tiny model predicts (almost) nothing at threshold 0.3; the test needs masks"
    cut = areas[len(areas) // 2]
    ruled = listening.main(base + ["--min-area", str(cut), "--output", str(tmp_path / "ruled")] + common)
    assert json.load(open(tmp_path / "ruled" / "listening.json"))["min_area"] == cut
    assert "minimum-area rule" in open(tmp_path / "ruled" / "listening.md").read()
    changed = 0
    for name in plain:
        for a, b in zip(clips("plain", name), clips("ruled", name)):
            assert b["area"] == [x if x > cut else 0.0 for x in a["area"]]
            assert b["any_fg"] == [x > cut for x in a["area"]]
            changed += sum(0.0 < x <= cut for x in a["area"])
            if a["iou"] is not None:
                assert b["iou"] == [i if x > cut else 0.0 for i, x in zip(a["iou"], a["area"])]
    assert changed > 0
    own = [np.mean(c["iou"]) for c in clips("ruled", "own")]
    assert ruled["own"]["mIoU"] == pytest.approx(float(np.mean(own)), abs=1e-6)
    with pytest.raises(SystemExit, match="--min-area"):
        listening.main(base + ["--min-area", "1.5", "--output", str(tmp_path / "x")] + common)


def test_negatives_by_pathway_reach_the_named_pathways(tiny_model, tmp_path):
    """--by-pathway / --own-with: the conditions, their records, and what each pathway of the model hears."""
    from detectron2.data import DatasetCatalog

    from aqformer_d2.data import build_aq_dataset_mapper
    from aqformer_d2.engine import AQFormerTrainer, condition_dataset, listening_conditions, pathway_conditions

    common, weights = tiny_model
    base = ["--config-file", CONFIG, "--weights", weights, "--resamples", "20", "--threads", "1"]
    summary = listening.main(base + ["--only", "silence", "offscreen_scene", "--by-pathway", "offscreen_scene",
                                     "--own-with", "silence", "--output", str(tmp_path / "p")] + common)
    by_pathway = ["offscreen_scene@" + p for p in ("pixel", "abti", "query", "abti+query", "pixel+query", "pixel+abti")]
    own_with = ["own+silence@" + p for p in ("pixel", "abti", "query", "abti+query", "pixel+query", "pixel+abti")]
    assert list(summary) == ["own", "silence", "offscreen_scene"] + by_pathway + own_with
    assert all(summary[n]["negative"] and "listening_score" in summary[n] for n in by_pathway)
    assert all(not summary[n]["negative"] and "mIoU" in summary[n] for n in own_with)
    assert all(os.path.exists(tmp_path / "p" / f"{n}.json") for n in by_pathway + own_with)

    cfg = build_cfg(CONFIG, common)
    mapper = build_aq_dataset_mapper(cfg, is_train=False)
    conds = {c["name"]: c for c in listening_conditions()}
    first = {n: mapper(DatasetCatalog.get(condition_dataset("synthavs_s4_test", c))[0]) for n, c in conds.items()}
    for c in pathway_conditions(conds["offscreen_scene"]) + pathway_conditions(conds["silence"], elsewhere="own"):
        clip = mapper(DatasetCatalog.get(condition_dataset("synthavs_s4_test", c))[0])
        heard, rest = ("offscreen_scene", "silence") if c["elsewhere"] == "silence" else ("silence", "own")
        assert list(clip["pathway_audio"]) == c["pathways"], c["name"]
        assert all(torch.equal(x, first[heard]["audio"]) for x in clip["pathway_audio"].values()), c["name"]
        assert torch.equal(clip["audio"], first[rest]["audio"]), c["name"]
        assert torch.equal(clip["masks"], first[rest]["masks"]), c["name"]
    # the model hears the query pathway's sound: its output moves away from silence's, and differs from every pathway's
    model = AQFormerTrainer.build_model(build_cfg(CONFIG, common + ["MODEL.WEIGHTS", weights]))
    from aqformer_d2.checkpoint import AQCheckpointer

    AQCheckpointer(model).load(weights)
    model.eval()
    query_only = mapper(DatasetCatalog.get(condition_dataset("synthavs_s4_test", pathway_conditions(conds["offscreen_scene"])[2]))[0])
    with torch.no_grad():
        probs = {n: model([x])[0]["sound_probs"] for n, x in
                 (("silence", first["silence"]), ("offscreen_scene", first["offscreen_scene"]), ("query", query_only))}
    assert not torch.equal(probs["query"], probs["silence"]) and not torch.equal(probs["query"], probs["offscreen_scene"])

    for option, name in (("--by-pathway", "silence"), ("--by-pathway", "swap"), ("--own-with", "own"),
                         ("--by-pathway", "offscreen")):
        with pytest.raises(SystemExit, match=f"{option}: \\['{name}'\\] are not among"):
            listening.main(base + ["--only", "silence", "offscreen_scene", option, name,
                                   "--output", str(tmp_path / "x")] + common)
    with pytest.raises(ValueError, match="two or more distinct"):
        pathway_conditions(conds["offscreen_scene"], pathways=["query"])
    with pytest.raises(ValueError, match="not already by pathway"):
        pathway_conditions(pathway_conditions(conds["offscreen_scene"])[0])
