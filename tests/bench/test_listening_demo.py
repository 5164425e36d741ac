"""bench.listening_demo end to end: 2 SynthAVS-S4 test clips written as videos, demo/demo.py with the sound and
with --mute for one model (2 iterations, 32 px): the counts agree with the demo's own summaries (that --mute feeds
the log-mel of silence is tested in tests/demo), and bad --model arguments are refused with the reason."""
import json
import os

import pytest

from bench import listening_demo

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "synthavs", "aqformer_tiny_s4.yaml")


def test_videos_demo_with_sound_and_muted(tiny_model, tmp_path):
    common, weights = tiny_model
    out = tmp_path / "out"
    report = listening_demo.main(["--config-file", CONFIG, "--model", f"m={weights}", "--clips", "2",
                                  "--output", str(out)] + common)
    assert set(report["results"]) == {"m/sound", "m/muted"} and len(report["clips"]) == 2
    for cond in ("sound", "muted"):
        summaries = [json.load(open(out / "demo" / "m" / cond / clip / "summary.json")) for clip in report["clips"]]
        assert all(s["num_sampled_frames"] == 5 and s["audio_muted"] == (cond == "muted") for s in summaries)
        flagged = sum(s["num_frames_without_sounding_object"] for s in summaries)
        r = report["results"][f"m/{cond}"]
        assert (r["frames_flagged"], r["frames"]) == (flagged, 10)
        areas = [a for s in summaries for c in s["clips"] for a in c["foreground_fraction"]]
        assert r["mean_foreground"] == pytest.approx(sum(areas) / len(areas))
    assert json.load(open(out / "listening_demo.json"))["results"] == json.loads(json.dumps(report["results"]))
    assert (out / "listening_demo.png").stat().st_size > 1000
    assert open(out / "listening_demo.md").read().count("\n| m |") == 2


def test_bad_model_arguments_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="expected NAME=WEIGHTS"):
        listening_demo.parse_models(["weights.pth"])
    with pytest.raises(SystemExit, match="does not exist"):
        listening_demo.parse_models([f"a={tmp_path / 'missing.pth'}"])
    (tmp_path / "w.pth").write_bytes(b"x")
    with pytest.raises(SystemExit, match="given twice"):
        listening_demo.parse_models([f"a={tmp_path / 'w.pth'}", f"a={tmp_path / 'w.pth'}"])
