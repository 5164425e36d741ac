"""bench.avss_memory on the tiny AVSS config: what it counts, and that it grows with what it should."""
import json
import os
import subprocess
import sys

from bench import avss_memory

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY = "configs/synthavs/aqformer_tiny_avss.yaml"


def _module():
    return avss_memory


def test_saved_bytes_grow_with_frames_and_queries():
    bench = _module()
    base = bench.measure(bench.parse_args(["--config", TINY, "--frames", "2", "--size", "32"]))
    more_frames = bench.measure(bench.parse_args(["--config", TINY, "--frames", "4", "--size", "32"]))
    more_queries = bench.measure(bench.parse_args(["--config", TINY, "--frames", "2", "--size", "32",
                                                   "--set", "MODEL.AQ_SEMANTIC.NUM_QUERIES", "40"]))
    assert base["saved_for_backward_bytes"] > 0 and base["gradients_GiB"] > 0
    # activations scale with the frames (x2 frames: well above x1.5) and grow with the queries
    assert more_frames["saved_for_backward_bytes"] > 1.5 * base["saved_for_backward_bytes"]
    assert more_queries["saved_for_backward_bytes"] > base["saved_for_backward_bytes"]


def test_command_line_writes_one_json_line(tmp_path):
    out = tmp_path / "m.jsonl"
    cmd = [sys.executable, "-m", "bench.avss_memory", "--config", TINY, "--frames", "2",
           "--size", "32", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text().strip())
    assert record["frames"] == 2 and record["size"] == 32 and record["peak_rss_increase_GiB"] >= 0
