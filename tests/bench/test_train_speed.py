"""bench/train_speed.py: a real (very short) run of the main job's trainer, and what it records."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_short_run_records_step_times_losses_and_frames_per_second(tmp_path):
    out = tmp_path / "train_speed.json"
    cmd = [sys.executable, "-m", "bench.train_speed", "--warmup", "2", "--steps", "2",
           "--threads", "1", "--clips", "8", "--data", str(tmp_path / "data"), "--work-dir", str(tmp_path / "run"),
           "--parts", "--out", str(out), "SOLVER.IMS_PER_BATCH", "2", "SEED", "3"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["steps"] == 2 and result["warmup"] == 2 and result["threads"] == 1
    assert len(result["loss_per_step"]) == 4  # every step's loss, the warm-up included
    assert all(v > 0 for v in result["loss_per_step"])
    step = result["step_s"]
    assert 0 < step["min"] <= step["median"] <= step["max"]
    # frames per second = clips per step x T / median step time
    assert abs(result["frames_per_s"] - 2 * result["num_frames"] / step["median"]) < 1e-9
    assert "frames/s" in proc.stdout
    # --malloc tuned (the default): the run restarted itself with the malloc settings make demo has
    from bench.malloc_env import MALLOC_ENV, with_malloc_env

    expected = with_malloc_env(os.environ)
    assert result["malloc"] == "tuned" and result["malloc_env"] == {k: expected[k] for k in MALLOC_ENV}
    # --parts: every part of the tiny model timed alone, the backward adding time to the forward
    parts = result["part_times"]
    assert {"backbone", "audio_encoder", "pixel_decoder", "pixel_decoder.abti.4", "predictor", "criterion"} <= set(parts)
    assert all(t["forward_s"] > 0 and t["forward_backward_s"] > 0 for t in parts.values())
    assert parts["pixel_decoder"]["forward_backward_s"] > parts["pixel_decoder"]["forward_s"]


def test_same_seed_starts_from_the_same_weights(tmp_path):
    """Two runs with the same SEED draw the same initial weights and data (as make demo seeds them), so
    their losses match; another SEED gives other losses. (Different processes on one machine: the same
    kernels on the same inputs, so the first losses agree to float32 round-off or better.)"""
    losses = {}
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        out = tmp_path / f"{name}.json"
        cmd = [sys.executable, "-m", "bench.train_speed", "--warmup", "2", "--steps", "2",
               "--threads", "1", "--clips", "8", "--data", str(tmp_path / "data"), "--work-dir", str(tmp_path / name),
               "--out", str(out), "SOLVER.IMS_PER_BATCH", "2", "SEED", seed]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        losses[name] = json.loads(out.read_text())["loss_per_step"]
    assert all(abs(x - y) <= 1e-5 * abs(y) for x, y in zip(losses["a"], losses["b"]))
    assert abs(losses["a"][0] - losses["c"][0]) > 1e-3


def test_rejects_a_warmup_detectron2_does_not_time():
    proc = subprocess.run([sys.executable, "-m", "bench.train_speed", "--warmup", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--warmup must be >= 2" in proc.stderr
