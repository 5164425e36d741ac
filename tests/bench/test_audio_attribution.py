"""bench/audio_attribution.py end to end: a 2-iteration full model from bench/ablations.py, evaluated with
its own audio and with another clip's audio in each pathway and in all three."""
import json

import pytest

from bench import ablations as ab
from bench import audio_attribution as aa


def test_attribution_on_a_saved_full_model(tmp_path):
    work, out = tmp_path / "work", tmp_path / "attr"
    ab.main(["--tasks", "s4", "--rows", "d:n3", "--seeds", "0", "--iters", "2", "--image-size", "32",
             "--synthavs-clips", "3", "1", "3", "--output", str(tmp_path / "abl"), "--work-dir", str(work),
             "--threads", "1", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0"])
    (result,) = aa.main(["--tasks", "s4", "--work-dir", str(work), "--swap-seeds", "0", "1", "--threads", "1",
                         "--output", str(out)])
    assert [r["pathways"] for r in result["rows"]] == [[], ["pixel"], ["abti"], ["query"], ["pixel", "abti", "query"]]
    assert len(result["rows"][0]["runs"]) == 1 and all(len(r["runs"]) == 2 for r in result["rows"][1:])
    for r in result["rows"]:
        assert 0.0 <= r["MJ"] <= 1.0 and 0.0 <= r["MF"] <= 1.0
        assert r["MJ"] == pytest.approx(sum(x["mIoU"] for x in r["runs"]) / len(r["runs"]))
    on_disk = json.load(open(out / "attribution.json"))
    assert on_disk["results"][0]["rows"] == result["rows"]
    md = open(out / "attribution.md").read()
    assert md.count("| S4 |") == 5 and "ABTI" in md


def test_missing_model_names_the_command_that_makes_it(tmp_path):
    with pytest.raises(SystemExit, match="-m bench.ablations --tasks ms3 --rows d:n3 --seeds 0"):
        aa.main(["--tasks", "ms3", "--work-dir", str(tmp_path), "--output", str(tmp_path / "o")])
