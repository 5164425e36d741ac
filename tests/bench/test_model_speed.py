"""bench/model_speed.py: the goals it evaluates, and one real (tiny) run."""
import json

from bench import model_speed


def _result(model_s, backbone_s, gflops):
    t = lambda v: {"min": v, "median": v, "max": v}  # noqa: E731
    parts = {label: {"gflops": g, "time_s": t(s)} for label, g, s in (
        ("backbone", gflops[0], backbone_s), ("pixel decoder (ABTI)", gflops[1], (model_s - backbone_s)))}
    return {"backbone": {"time_s": t(backbone_s)},
            "model": {"time_s": t(model_s), "parts": parts, "peak_rss_mib": 100.0}}


def test_goals_ratios_efficiency_and_flop_floors():
    goals = {g["goal"]: g for g in model_speed.evaluate_goals({
        "R50": _result(2.9, 1.0, (20.0, 40.0)),  # pixel decoder 40 GFLOP in 1.9 s vs backbone 20 in 1 s
        "PVTv2b5": _result(1.6, 1.0, (60.0, 40.0)),
    })}
    assert goals["R50 whole model time <= 3x R50 backbone alone"]["met"] is True
    assert goals["R50 whole model time <= 3x R50 backbone alone"]["measured"] == "2.90x"
    assert goals["(R50 FLOP floor of that ratio: model GFLOP / backbone GFLOP)"]["measured"] == "3.00x"
    eff = goals["R50 pixel decoder achieved GFLOP/s >= 85% of the backbone's"]
    assert eff["measured"] == "105%" and eff["met"] is True  # (40 / 1.9) / (20 / 1)
    assert goals["PVT-v2-b5 whole model time <= 1.5x its backbone alone"]["met"] is False
    assert goals["(PVT-v2-b5 FLOP floor of that ratio: model GFLOP / backbone GFLOP)"]["measured"] == "1.67x"


def test_tiny_run_writes_times_parts_and_markdown(tmp_path):
    out = tmp_path / "speed.json"
    assert model_speed.main(["--configs", "tiny", "--size", "64", "--frames", "2", "--threads", "1", "--warmup", "0",
                             "--repeats", "1", "--no-profile", "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    result = payload["results"]["tiny"]
    # times are recorded, not compared: one repeat on a shared machine orders them by chance; what must hold
    # is that the model contains the backbone
    assert result["model"]["time_s"]["median"] > 0 and result["backbone"]["time_s"]["median"] > 0
    assert result["model"]["params_m"] > result["backbone"]["params_m"] > 0
    assert set(result["model"]["parts"]) == {label for label, _ in model_speed.PARTS}
    assert all(p["gflops"] > 0 for p in result["model"]["parts"].values())
    assert "| tiny |" in payload["markdown"]


def test_malloc_settings_reach_the_workers(tmp_path, monkeypatch):
    """--malloc tuned starts the measured processes with bench/malloc_env.py's settings,
    --malloc default without them (even when the caller's environment has them)."""
    from bench.malloc_env import MALLOC_ENV

    seen = {}

    def fake_run(cmd, cwd, capture_output, text, env):
        seen[cmd[cmd.index("--worker") + 1]] = env
        out = cmd[cmd.index("--result-file") + 1]
        with open(out, "w") as f:
            f.write("{}")

        class Done:
            returncode = 0
        return Done()

    monkeypatch.setattr(model_speed.subprocess, "run", fake_run)
    for key, value in MALLOC_ENV.items():
        monkeypatch.setenv(key, value)
    args = model_speed.argparse.Namespace(frames=2, size=64, threads=1, warmup=0, repeats=1, profile=False,
                                          malloc="default")
    model_speed.run_worker(args, "tiny", "backbone")
    assert not set(MALLOC_ENV) & set(seen["backbone"])
    args.malloc = "tuned"
    for key in MALLOC_ENV:
        monkeypatch.delenv(key)
    model_speed.run_worker(args, "tiny", "model")
    assert all(seen["model"][k] == v for k, v in MALLOC_ENV.items())
