"""bench.listening_report: two models' listening records side by side, refused when they differ in conditions;
the table of false positives by minimum area from the per-clip records."""
import json
import os

import pytest

from bench import listening_report


def _record(folder, fg_own, fg_silence, conditions=("own", "silence")):
    summary = {}
    for cond in conditions:
        neg = cond != "own"
        fg = fg_silence if neg else fg_own
        row = {"negative": neg, "num_clips": 3, "foreground_frames": fg, "foreground_frames_ci": [fg / 2, fg],
               "mean_area": fg / 10, "mean_area_ci": [0.0, fg]}
        row.update({"listening_score": 0.5, "listening_score_ci": [0.4, 0.6]} if neg else
                   {"mIoU": 0.7, "Fscore": 0.8, "mIoU_ci": [0.6, 0.8]})
        summary[cond] = row
    folder.mkdir()
    (folder / "listening.json").write_text(json.dumps({"summary": summary, "dataset": "synthavs_s4_test"}))
    return str(folder)


def test_two_models_side_by_side_with_chart(tmp_path):
    a = _record(tmp_path / "a", 1.0, 0.9)
    b = _record(tmp_path / "b", 1.0, 0.04)
    chart = tmp_path / "chart.png"
    lines = listening_report.main([f"without={a}", f"with={b}", "--chart", str(chart)])
    assert lines[0] == "| condition | without | with |"
    assert lines[2] == ("| own | 1.000 [0.500, 1.000]; area 0.100; M_J 0.700 | "
                        "1.000 [0.500, 1.000]; area 0.100; M_J 0.700 |")
    assert lines[3] == ("| silence | 0.900 [0.450, 0.900]; area 0.090; S 0.500 | "
                        "0.040 [0.020, 0.040]; area 0.004; S 0.500 |")
    assert chart.stat().st_size > 1000


def test_refuses_records_with_other_conditions_or_missing(tmp_path):
    a = _record(tmp_path / "a", 1.0, 0.9)
    b = _record(tmp_path / "b", 1.0, 0.9, conditions=("own", "silence", "offscreen"))
    with pytest.raises(SystemExit, match="differ"):
        listening_report.load([f"a={a}", f"b={b}"])
    with pytest.raises(SystemExit, match="does not exist"):
        listening_report.load([f"c={tmp_path / 'nowhere'}"])
    with pytest.raises(SystemExit, match="expected NAME=DIR"):
        listening_report.load([a])


def test_min_area_table_reads_the_per_clip_records(tmp_path):
    a = _record(tmp_path / "a", 1.0, 0.75)
    b = _record(tmp_path / "b", 1.0, 0.25)
    clips = {"a": [[0.0, 0.001], [0.02, 0.004]], "b": [[0.0, 0.0], [0.0, 0.3]]}  # 2 clips x 2 frames of areas
    for name, areas in clips.items():
        (tmp_path / name / "silence.json").write_text(json.dumps({"clips": [{"area": x} for x in areas]}))
    lines = listening_report.main([f"a={a}", f"b={b}", "--min-areas", "0", "0.002", "0.01"])
    i = lines.index("")
    assert lines[i + 1] == "| condition: frames with foreground above area 0 / 0.002 / 0.01 | a | b |"
    assert lines[i + 3] == "| silence | 0.750 / 0.500 / 0.250 | 0.250 / 0.250 / 0.250 |"
    assert len(lines) == i + 4  # negatives only: own has no line
    with pytest.raises(SystemExit, match="not negative conditions"):
        listening_report.main([f"a={a}", f"b={b}", "--min-areas", "0", "--area-conditions", "own"])
    assert listening_report.main([f"a={a}", "--min-areas", "0", "--area-conditions", "silence"])[-1] == "| silence | 0.750 |"
    (tmp_path / "b" / "silence.json").unlink()
    with pytest.raises(SystemExit, match="silence.json does not exist"):
        listening_report.main([f"a={a}", f"b={b}", "--min-areas", "0"])
    with pytest.raises(SystemExit):
        listening_report.main([f"a={a}", "--min-areas", "1.5"])


def test_seed_table_gives_each_seeds_value_per_model(tmp_path):
    """--seeds: one line per model, M_J on positives and FPR on negatives, seeds in the order given; a chart with
    the mean over seeds; models with different numbers of seeds, repeated names and --min-areas are refused."""
    full = [_record(tmp_path / f"full{s}", 1.0, fg) for s, fg in enumerate((0.25, 0.5))]
    vanilla = [_record(tmp_path / f"van{s}", 1.0, fg) for s, fg in enumerate((0.125, 0.75))]
    chart = tmp_path / "seeds.png"
    lines = listening_report.main(["--seeds", f"full={full[0]},{full[1]}", f"vanilla={vanilla[0]},{vanilla[1]}",
                                   "--chart", str(chart)])
    assert lines == ["| model | own (M_J) | silence (FPR) |", "|---|---:|---:|",
                     "| full | 0.700 / 0.700 | 0.250 / 0.500 |", "| vanilla | 0.700 / 0.700 | 0.125 / 0.750 |"]
    assert chart.stat().st_size > 1000
    lines = listening_report.main(["--seeds", f"full={full[1]},{full[0]}", "--conditions", "silence"])
    assert lines[-1] == "| full | 0.500 / 0.250 |"
    with pytest.raises(SystemExit, match="same number of seed folders"):
        listening_report.main(["--seeds", f"full={full[0]},{full[1]}", f"vanilla={vanilla[0]}"])
    with pytest.raises(SystemExit, match="named twice"):
        listening_report.main(["--seeds", f"full={full[0]}", f"full={full[1]}"])
    with pytest.raises(SystemExit, match="not conditions"):
        listening_report.main(["--seeds", f"full={full[0]}", "--conditions", "offscreen"])
    with pytest.raises(SystemExit):
        listening_report.main(["--seeds", f"full={full[0]}", "--min-areas", "0"])
    with pytest.raises(SystemExit):
        listening_report.main([f"full={full[0]}", "--conditions", "silence"])
    ruled = json.load(open(os.path.join(vanilla[1], "listening.json")))
    ruled["min_area"] = 0.002  # evaluated with bench.listening --min-area 0.002
    with open(os.path.join(vanilla[1], "listening.json"), "w") as f:
        json.dump(ruled, f)
    with pytest.raises(SystemExit, match=r"vanilla: its seed folders were evaluated with different --min-area \(\[0.0, 0.002\]\)"):
        listening_report.main(["--seeds", f"vanilla={vanilla[0]},{vanilla[1]}"])
    assert listening_report.main(["--seeds", f"full={full[0]}", f"vanilla={vanilla[1]}"])[-1].startswith("| vanilla")


def test_min_area_table_reads_own_empty_gt_from_the_own_records(tmp_path):
    """own_empty_gt has no record of its own: its areas are the own condition's frames marked empty_gt."""
    a = _record(tmp_path / "a", 1.0, 0.5, conditions=("own", "silence"))
    rec = json.load(open(os.path.join(a, "listening.json")))
    rec["summary"]["own_empty_gt"] = {**rec["summary"]["silence"], "derived_from": "own"}
    rec["summary"]["own_empty_gt"].pop("listening_score")
    (tmp_path / "a" / "listening.json").write_text(json.dumps(rec))
    (tmp_path / "a" / "silence.json").write_text(json.dumps({"clips": [{"area": [0.0, 0.0]}]}))
    own = [{"area": [0.5, 0.001, 0.0], "empty_gt": [False, True, True]}, {"area": [0.2, 0.03], "empty_gt": [True, False]}]
    (tmp_path / "a" / "own.json").write_text(json.dumps({"clips": own}))
    lines = listening_report.main([f"a={a}", "--min-areas", "0", "0.002", "--area-conditions", "own_empty_gt"])
    assert lines[-1] == "| own_empty_gt | 0.667 / 0.333 |"  # areas 0.001, 0.0, 0.2 of the three empty frames
