"""bench.listening_offscreen_split: an off-screen record's clips grouped by the category whose sound they heard."""
import json
import os

import pytest
from detectron2.data import DatasetCatalog

from aqformer_d2.data.datasets import with_negative_audio
from aqformer_d2.data.negative_audio import offscreen_category_of
from aqformer_d2.data.synthavs import generate_synthavs
from aqformer_d2.data.synthavs.clip import category_names
from aqformer_d2.data.synthavs.sounds import CATEGORY_SOUNDS
from bench import listening_offscreen_split

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "synthavs", "aqformer_tiny_s4.yaml")


def _clip(i, on_screen):
    return {"video_id": f"c{i}", "synthavs_num_categories": 8, "synthavs_category_ids": list(on_screen)}


def test_groups_follow_the_sound_each_clip_heard():
    clips = with_negative_audio([_clip(i, [i % 8, (i + 3) % 8]) for i in range(40)], "offscreen_scene", 0.0, seed=4)
    records = [{"video_id": d["video_id"], "any_fg": [i % 3 == 0, False, True], "area": [0.01 * (i % 5), 0.0, 0.02]}
               for i, d in enumerate(clips)]
    out = listening_offscreen_split.split_offscreen(records, clips)
    heard = {d["video_id"]: offscreen_category_of(d["negative_audio"], d) for d in clips}
    names = category_names(8)
    assert list(out) == [names[c] for c in sorted(set(heard.values()))] and len(out) > 2
    assert sum(row["clips"] for row in out.values()) == 40
    for category, row in out.items():
        mine = [r for r in records if names[heard[r["video_id"]]] == category]
        assert row["clips"] == len(mine)
        assert row["foreground_frames"] == pytest.approx(sum(sum(r["any_fg"]) for r in mine) / (3 * len(mine)))
        assert row["mean_area"] == pytest.approx(sum(sum(r["area"]) for r in mine) / (3 * len(mine)))
        assert row["sound"] == CATEGORY_SOUNDS[names.index(category)][0]
    with pytest.raises(ValueError, match="'x9' of the record is not in the condition's dataset"):
        listening_offscreen_split.split_offscreen(records + [{"video_id": "x9", "any_fg": [True], "area": [0.1]}], clips)


def test_main_rebuilds_the_condition_of_the_record(tmp_path, capsys):
    """From a record on disk: the dataset, condition and seed written by bench.listening give the same
    categories as the condition's own dataset dicts; a record of another condition is refused."""
    synth = str(tmp_path / "synthavs")
    generate_synthavs(synth, variant="s4", seed=3, n_train=1, n_val=1, n_test=6, image_size=32)
    opts = ["DATASETS.SYNTHAVS_ROOT", synth, "INPUT.IMAGE_SIZE", "32"]
    from aqformer_d2.engine import build_cfg
    from aqformer_d2.engine.listening import condition_dataset, listening_conditions

    build_cfg(CONFIG, opts)
    condition = next(c for c in listening_conditions() if c["name"] == "offscreen_scene")
    dicts = DatasetCatalog.get(condition_dataset("synthavs_s4_test", condition, 7))
    record = {"condition": condition, "dataset": "synthavs_s4_test", "seed": 7,
              "clips": [{"video_id": d["video_id"], "any_fg": [True] * 5, "area": [0.01] * 5} for d in dicts]}
    path = tmp_path / "offscreen_scene.json"
    path.write_text(json.dumps(record))
    out = listening_offscreen_split.main(["--config-file", CONFIG, "--record", str(path)] + opts)
    names = category_names(dicts[0]["synthavs_num_categories"])
    expect = {}
    for d in dicts:
        name = names[offscreen_category_of(d["negative_audio"], d)]
        expect[name] = expect.get(name, 0) + 1
    assert {k: v["clips"] for k, v in out.items()} == expect
    printed = capsys.readouterr().out
    assert printed.startswith("# `python -m bench.listening_offscreen_split --config-file")
    assert printed.count("frames with foreground 1.000") == len(expect)
    path.write_text(json.dumps(dict(record, condition=listening_conditions()[1])))  # silence
    with pytest.raises(SystemExit, match="'silence' is not an off-screen negative"):
        listening_offscreen_split.main(["--config-file", CONFIG, "--record", str(path)] + opts)
    # a record by pathway (bench.listening --by-pathway): the same clips hear the same sounds in the query only
    from aqformer_d2.engine import pathway_conditions

    by_pathway = pathway_conditions(condition)
    query_only = next(c for c in by_pathway if c["pathways"] == ["query"])
    path.write_text(json.dumps(dict(record, condition=query_only)))
    out_query = listening_offscreen_split.main(["--config-file", CONFIG, "--record", str(path)] + opts)
    assert {k: v["clips"] for k, v in out_query.items()} == expect
    own = pathway_conditions(condition, elsewhere="own")[0]  # the clip's own sound elsewhere: not a negative
    path.write_text(json.dumps(dict(record, condition=own)))
    with pytest.raises(SystemExit, match="'own\+offscreen_scene@pixel' is not an off-screen negative"):
        listening_offscreen_split.main(["--config-file", CONFIG, "--record", str(path)] + opts)
