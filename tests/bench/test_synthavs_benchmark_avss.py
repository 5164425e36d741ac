"""bench.synthavs_benchmark --tasks avss end to end at tiny sizes (2 iterations, 32 px, 2 test clips per subset):
the full model, its swapped-audio evaluation and the audio-blind model are scored with the official AVSS metric,
the record holds the per-class figures, and bench.avss_report turns it into the table, goals and chart."""
import json
import os

import pytest

from bench import avss_report, synthavs_benchmark


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("avss_bench")
    out = tmp / "out"
    report = synthavs_benchmark.main([
        "--tasks", "avss", "--iters", "2", "--controls", "swap", "blind", "--threads", "1",
        "--avss-root", str(tmp / "data"), "--avss-clips", "2", "1", "2", "--output", str(out),
        "INPUT.IMAGE_SIZE", "32", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "0",
        "MODEL.AQ_TRANSFORMER_DECODER.DEC_STAGES", "1", "MODEL.AQ_SEMANTIC.NUM_QUERIES", "4",
    ])
    return report, out


def test_avss_rows_full_swap_blind(record):
    report, out = record
    on_disk = json.load(open(out / "synthavs_benchmark_avss_seed0.json"))
    assert on_disk["rows"] == json.loads(json.dumps(report["rows"]))
    assert on_disk["synthavs_semantic"]["n_test"] == 2 and on_disk["machine"]["isa"] in ("AVX-512", "AVX2")
    variants = [r["variant"].split(" ")[0] for r in report["rows"]]
    assert variants == ["full", "swap", "blind"]
    for r in report["rows"]:
        assert r["protocol"] == "official" and r["iterations"] == 2
        # 2 test clips per subset; v1s / v1m padded 5 -> 10 frames, all scored: 6 clips x 10 frames
        assert (r["num_clips"], r["num_frames"], r["num_padded_frames"]) == (6, 60, 20)
        assert list(r["per_class"])[0] == "background" and len(r["per_class"]) == 9
        assert r["per_class"]["background"]["frames"] == 60
        # the official mIoU is the mean over all 9 classes (a class never seen counts 0)
        ious = [c["IoU"] for c in r["per_class"].values()]
        assert r["mIoU"] == pytest.approx(sum(ious) / 9, abs=1e-9)
        assert r["mIoU_noBg"] == pytest.approx(sum(ious[1:]) / 8, abs=1e-9)
    # the swap row evaluates the same trained model: same frame counts, another clip's audio
    assert report["rows"][1]["train_minutes"] == 0.0
    assert os.path.exists(out / "synthavs_runs" / "avss_full_seed0" / "model_final.pth")
    assert os.path.exists(out / "synthavs_runs" / "avss_blind_seed0" / "model_final.pth")


def test_report_table_goals_and_chart(record, tmp_path):
    report, _ = record
    rows = report["rows"]
    table = avss_report.per_class_table(rows)
    assert len(table) == 2 + 9 + 3 and table[2].startswith("| background | 60 |")
    goals = avss_report.avss_goal_lines(rows, report["total_minutes"], "AVX2")
    assert len(goals) == 4 and "not measurable here" in goals[-1]
    full = rows[0]["mIoU"]
    assert ("-> met" in goals[0]) == (full >= 0.60)
    # a made-up row set checks the arithmetic of the drops (teeth: 0.70 - 0.40 = 0.30 >= 0.25, 0.70 - 0.55 < 0.20)
    fake = [dict(rows[0], variant="full", mIoU=0.70), dict(rows[1], variant="swap", mIoU=0.40),
            dict(rows[2], variant="blind", mIoU=0.55)]
    g = avss_report.avss_goal_lines(fake, 20.0, "AVX-512")
    assert g[0].endswith("-> met") and g[1].endswith("-> met") and g[2].endswith("-> NOT met") and g[3].endswith("-> met")
    chart = tmp_path / "chart.png"
    avss_report.plot_per_class(rows, str(chart), "test")
    assert chart.stat().st_size > 1000


def test_overlays_of_the_trained_model(record, tmp_path):
    """bench.avss_report's command line: table, chart and the class-coloured overlays from the record's full model."""
    _, out = record
    chart, overlays = tmp_path / "chart.png", tmp_path / "overlays.png"
    avss_report.main([str(out / "synthavs_benchmark_avss_seed0.json"), "--chart", str(chart),
                      "--weights", str(out / "synthavs_runs" / "avss_full_seed0" / "model_final.pth"),
                      "--overlays", str(overlays)])
    from PIL import Image

    img = Image.open(overlays)
    # 3 clips (v1s, v1m, v2) x 2 rows, 10 frame columns of 112 px, plus the legend strip
    assert img.size == (10 * 112, 3 * 2 * (112 + 14) + 22)
    assert chart.stat().st_size > 1000


def _fake_row(variant, seed, miou, ious):
    return {"task": "avss", "variant": variant, "seed": seed, "iterations": 10, "clips_per_iteration": 4,
            "mIoU": miou, "Fscore": miou, "mIoU_noBg": miou, "Fscore_noBg": miou,
            "per_class": {n: {"IoU": v, "F": v, "frames": 5} for n, v in zip(("background", "dog"), ious)}}


def test_report_of_two_seeds_takes_means_and_pairs_drops_by_seed(tmp_path):
    """Two seeds: the table shows means and each seed's mIoU; a goal is met only when every seed meets it, and a
    control's drop is taken against the full model of the same seed."""
    rows = [_fake_row("full", 0, 0.70, (0.9, 0.5)), _fake_row("full", 1, 0.58, (0.9, 0.26)),
            _fake_row("swap (full model, other clip's audio)", 0, 0.40, (0.9, 0.0)),
            _fake_row("swap (full model, other clip's audio)", 1, 0.30, (0.9, 0.0)),
            _fake_row("blind", 0, 0.45, (0.9, 0.0)), _fake_row("blind", 1, 0.45, (0.9, 0.0))]
    table = avss_report.per_class_table(rows)
    assert table[0] == "| class | frames | IoU full (mean of 2 seeds) | IoU swap (mean of 2 seeds) | " \
                       "IoU blind (mean of 2 seeds) |"
    assert table[3] == "| dog | 5 | 0.380 | 0.000 | 0.000 |"
    assert table[-1] == "| mIoU per seed | | 0: 0.700 / 1: 0.580 | 0: 0.400 / 1: 0.300 | 0: 0.450 / 1: 0.450 |"
    goals = avss_report.avss_goal_lines(rows, 20.0, "AVX-512")
    # full: mean 0.64 but seed 1 below 0.60 -> not met
    assert goals[0] == "goal full mIoU >= 0.6: 0.640 (seed 0: 0.700, seed 1: 0.580) -> NOT met"
    # swap: drops 0.30 and 0.28 (paired by seed), both >= 0.25 -> met; pairing across seeds would give 0.40 / 0.18
    assert goals[1] == ("goal swap >= 0.25 below the full model: 0.350, 0.290 below "
                        "(seed 0: 0.300, seed 1: 0.280) -> met")
    # blind: drops 0.25 and 0.13 -> not met although the mean drop 0.19 is close
    assert goals[2].endswith("(seed 0: 0.250, seed 1: 0.130) -> NOT met")
    with pytest.raises(ValueError, match="variant 'full' has several rows of seed"):
        avss_report.per_class_table(rows + [_fake_row("full", 0, 0.1, (0.1, 0.1))])
    chart = tmp_path / "chart.png"
    avss_report.plot_per_class(rows, str(chart), "two seeds")
    assert chart.stat().st_size > 1000
