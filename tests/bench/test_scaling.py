"""bench/scaling.py: slope fits, and one real (tiny) point measured in a subprocess."""
import json

import pytest

from bench import scaling


def test_loglog_slope_recovers_power_laws():
    xs = [1e4, 2e4, 4e4, 8e4]
    assert scaling.loglog_slope(xs, [3 * x for x in xs]) == pytest.approx(1.0, abs=1e-9)
    assert scaling.loglog_slope(xs, [x ** 2 for x in xs]) == pytest.approx(2.0, abs=1e-9)


def test_summarise_reports_where_a_curve_bends():
    # linear up to 4e4 pixels, then quadratic: the local slopes show the bend
    points = [{"pixels_per_clip": x, "time_s": {"median": t}, "peak_activation_mib": t}
              for x, t in ((1e4, 1.0), (2e4, 2.0), (4e4, 4.0), (8e4, 16.0))]
    fit = scaling.summarise(points)
    assert fit["time"]["local_slopes"] == pytest.approx([1.0, 1.0, 2.0])
    assert 1.0 < fit["time"]["slope"] < 2.0


def test_run_point_measures_a_tiny_clip(tmp_path):
    args = scaling.parse_args(["--config", "tiny", "--threads", "1", "--warmup", "0", "--repeats", "1"])
    point = scaling.run_point(args, size=32, frames=2)
    assert point["pixels_per_clip"] == 2 * 32 * 32 and point["threads"] == 1
    assert point["time_s"]["median"] > 0 and point["peak_activation_mib"] >= 0
    json.dumps(point)
