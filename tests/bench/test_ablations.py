"""bench/ablations.py: row selection and dedupe, resume, the paper comparison, the table and chart,
and one real (3-iteration) run end to end on a tiny SynthAVS."""
import json
import os

import pytest

from bench import ablations as ab


def _protocols(plan):
    return {t: {"iters": 1, "config_file": f"x_{t}.yaml"} for t in plan}


def test_paper_tables_bases_follow_the_printed_numbers():
    rows = {r.key: r for rs in ab.TABLES.values() for r in rs}
    same = lambda a, b: ab.canonical_overrides(rows[a].overrides) == ab.canonical_overrides(rows[b].overrides)
    # 2a "Audio Query" = 2b first row; 2c "-" = 2b AVSim-only; 2b full = 2c 1,2,3,4 = 2d N=3.
    assert same("a:audio", "b:neither") and rows["a:audio"].paper == rows["b:neither"].paper
    assert same("c:none", "b:avsim") and rows["c:none"].paper == rows["b:avsim"].paper
    assert same("b:both", "c:p1234") and same("b:both", "d:n3") and rows["b:both"].paper == rows["d:n3"].paper
    assert not same("a:vanilla", "a:audio") and not same("d:n1", "d:n3")
    assert all(sum(r.reference for r in rs) == 1 for rs in ab.TABLES.values())


def test_default_selection_dedupes_shared_settings_and_excludes_table_e():
    plan = ab.select_rows(["ms3", "s4"], None, None)
    assert {r.table for r in plan["ms3"]} == {"a", "b", "c", "d"}
    assert all(r.table != "e" for rows in plan.values() for r in rows)
    ms3_runs = ab.unique_runs(plan["ms3"])
    # 3 + 4 + 6 + 3 = 16 rows, of which a:audio=b:neither, b:avsim=c:none, b:both=c:p1234=d:n3 are shared.
    assert len(plan["ms3"]) == 16 and len(ms3_runs) == 12
    shared = {tuple(sorted(r.key for r in rows)) for _, rows in ms3_runs if len(rows) > 1}
    assert shared == {("a:audio", "b:neither"), ("b:avsim", "c:none"), ("b:both", "c:p1234", "d:n3")}
    assert [r.key for r in plan["s4"]] == ["d:n3"]
    assert [r.key for r in ab.select_rows(["ms3"], ["e"], None)["ms3"]][0] == "e:default"
    assert [r.key for r in ab.select_rows(["ms3"], ["a"], ["d:n1"])["ms3"]] == ["d:n1"]
    with pytest.raises(SystemExit, match="unknown row"):
        ab.select_rows(["ms3"], None, ["a:nope"])
    with pytest.raises(SystemExit, match="unknown sub-table"):
        ab.select_rows(["ms3"], ["z"], None)


def test_canonical_overrides_ignore_order_but_not_values():
    a = ab.canonical_overrides([("K1", [1, 2]), ("K2", 0.0)])
    assert a == ab.canonical_overrides([("K2", 0.0), ("K1", [1, 2])])
    assert a != ab.canonical_overrides([("K2", 1.0), ("K1", [1, 2])])
    p1, p2 = {"iters": 10}, {"iters": 20}
    assert ab.run_id(a, p1) != ab.run_id(a, p2) and ab.run_id(a, p1) == ab.run_id(a, dict(p1))
    assert ab.run_slug(ab.canonical_overrides([("A.ABTI_POSITIONS", []), ("B.DEC_STAGES", 3)])) == \
        "abti_positions=none_dec_stages=3"


def test_resume_skips_finished_runs_and_orders_full_models_then_whole_subtables(tmp_path):
    plan = ab.select_rows(["ms3", "s4"], ["a", "d"], None)
    protocols = _protocols(plan)
    todo = ab.pending_runs(plan, [0, 1], str(tmp_path), protocols)
    assert len(todo) == 2 * 2 * 6  # per task: a 3 runs + d 3 runs (no setting shared), 2 seeds
    full = ab.canonical_overrides(dict(ab.FULL).items())
    # Full models (seed 0) of both tasks first, MS3 first; then MS3 (a) with both seeds, then MS3 (d), ...
    assert [(t[0], t[1] == full, t[3]) for t in todo[:2]] == [("ms3", True, 0), ("s4", True, 0)]
    assert [(t[0], t[2][0].table, t[3]) for t in todo[2:8]] == [("ms3", "a", 0)] * 3 + [("ms3", "a", 1)] * 3
    assert [(t[0], t[2][0].table, t[3]) for t in todo[8:13]] == [("ms3", "d", 0)] * 2 + [("ms3", "d", 1)] * 3
    assert len({(t[0], t[1], t[3]) for t in todo}) == len(todo)
    # Finish two of them: they are no longer pending; another protocol does not count as finished.
    for task, canonical, rows, seed in todo[:2]:
        path = ab.result_path(str(tmp_path), task, canonical, protocols[task], seed)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump({"mIoU": 0.5, "Fscore": 0.6}, f)
    left = ab.pending_runs(plan, [0, 1], str(tmp_path), protocols)
    assert len(left) == 22 and all(x not in left for x in todo[:2])
    other = {t: {"iters": 2} for t in plan}
    assert len(ab.pending_runs(plan, [0, 1], str(tmp_path), other)) == 24


def test_compare_sign_and_spread():
    # ours: row above reference, seeds do not overlap; the paper says the same direction.
    c = ab.compare([0.60, 0.62], [0.50, 0.55], 0.557, 0.535)
    assert c["diff"] == pytest.approx(0.085) and c["paper_diff"] == pytest.approx(0.022)
    assert c["same_sign"] is True and c["beyond_spread"] is True
    # overlapping seed ranges, opposite sign
    c = ab.compare([0.50, 0.56], [0.52, 0.60], 0.557, 0.535)
    assert c["same_sign"] is False and c["beyond_spread"] is False
    # no paper number for the row / one seed only
    c = ab.compare([0.5], [0.4, 0.45], None, 0.535)
    assert c["same_sign"] is None and c["beyond_spread"] is None


def test_table_and_chart_from_results(tmp_path):
    plan = ab.select_rows(["ms3"], ["a"], None)
    rows = {r.name: r for r in plan["ms3"]}
    values = {"vanilla": (0.40, 0.42), "own": (0.55, 0.60), "audio": (0.56, 0.58)}
    results = {("ms3", ab.canonical_overrides(rows[n].overrides)): {s: {"mIoU": v[s], "Fscore": v[s] + 0.1}
                                                                 for s in (0, 1)} for n, v in values.items()}
    entries = ab.build_table(plan, results)
    by = {e["row"]: e for e in entries}
    assert by["audio"]["vs_reference"] is None and by["audio"]["reference"]
    v = by["vanilla"]["vs_reference"]["MJ"]
    assert v["diff"] == pytest.approx(0.41 - 0.57) and v["paper_diff"] == pytest.approx(0.450 - 0.535)
    assert v["same_sign"] is True and v["beyond_spread"] is True
    o = by["own"]["vs_reference"]["MJ"]  # paper: own below audio; ours: 0.575 vs 0.57 (above), overlapping
    assert o["same_sign"] is False and o["beyond_spread"] is False
    md = ab.markdown_table(entries)
    assert "| Vanilla Object Query | 0.534 | 0.450 | 0.510 ±0.010 | 0.410 ±0.010 (0.400, 0.420) | -0.160 / -0.085 | yes | yes |" in md
    assert "| **no** | no |" not in md and "| **no** | **no** |" in md
    # The paper's Table 2 is MS3 only: an S4 table carries no paper numbers and no sign verdict.
    s4 = ab.build_table({"s4": plan["ms3"]}, {("s4", k[1]): v for k, v in results.items()})
    assert all(e["paper_MJ"] is None for e in s4)
    assert next(e for e in s4 if e["row"] == "vanilla")["vs_reference"]["MJ"]["same_sign"] is None
    png = tmp_path / "chart.png"
    ab.save_chart(entries, str(png))
    assert png.stat().st_size > 1000


def test_end_to_end_three_iterations_then_resume(tmp_path, monkeypatch):
    out, work = tmp_path / "out", tmp_path / "work"
    argv = ["--tasks", "ms3", "--rows", "a:vanilla", "b:both", "--seeds", "0", "--iters", "2", "--image-size", "32",
            "--synthavs-clips", "3", "1", "2", "--output", str(out), "--work-dir", str(work), "--threads", "1",
            "--jobs", "2", "SOLVER.IMS_PER_BATCH", "2"]
    entries = ab.main(argv)  # two child processes, one run each
    assert {e["row"] for e in entries} == {"vanilla", "both"} and all(e["seeds"] == [0] for e in entries)
    for e in entries:
        assert 0.0 <= e["MJ"][0] <= 1.0
    runs = sorted(os.listdir(out / "runs" / "ms3"))
    assert len(runs) == 4 and sum(n.endswith(".metrics.jsonl") for n in runs) == 2  # result + loss curve
    runs = [n for n in runs if n.endswith(".json")]
    for name in ("ablations.json", "ablations.md", "ablations.png"):
        assert (out / name).is_file()
    pth, yaml_path = ab.model_paths(str(work), "ms3")
    assert os.path.isfile(pth) and os.path.isfile(yaml_path)
    record = json.load(open(out / "runs" / "ms3" / runs[0]))
    assert record["protocol"]["iters"] == 2 and len(record["loadavg_before"]) == 3
    # Resume: nothing left to train (a training would change the file's "finished" stamp).
    stamps = {n: json.load(open(out / "runs" / "ms3" / n))["finished"] for n in runs}
    monkeypatch.setattr(ab, "run_one", lambda *a, **k: pytest.fail("a finished run was trained again"))
    ab.main(argv)
    assert {n: json.load(open(out / "runs" / "ms3" / n))["finished"] for n in runs} == stamps


def test_child_arguments_keep_the_protocol():
    args = ab.parse_args(["--tables", "a", "--seeds", "0", "1", "--iters", "7", "--image-size", "48",
                          "--synthavs-clips", "5", "1", "2", "--jobs", "3", "--output", "o", "--work-dir", "w",
                          "SOLVER.BASE_LR", "0.01"])
    child = ab.parse_args(ab.child_argv(args, "ms3", "a:own", 1))
    assert child.rows == ["a:own"] and child.seeds == [1] and child.jobs == 1 and child.no_report
    assert ab.protocol_for("ms3", child) == ab.protocol_for("ms3", args)
    assert (child.output, child.work_dir, child.threads) == ("o", "w", 1)


def test_every_row_builds_a_valid_config_of_its_task():
    """Each row's overrides are real keys with acceptable values (a typo in TABLES fails here, not after an
    hour of training), and table (e) names the rows docs/paper_choices.md points to."""
    from aqformer_d2.engine import build_cfg

    for rows in ab.TABLES.values():
        for row in rows:
            cfg = build_cfg("configs/synthavs/aqformer_tiny_ms3.yaml", [x for kv in row.overrides for x in kv])
            for key, value in row.overrides:
                node = cfg
                for part in key.split("."):
                    node = node[part]
                assert (list(node) if isinstance(node, (list, tuple)) else node) == value, key
    doc = open("docs/paper_choices.md").read()
    for row in ab.TABLES["e"]:
        if not row.reference:
            assert f"`choice_{row.name}`" in doc, row.name


def test_report_name_keeps_the_default_report(tmp_path):
    """A sub-selection reported under another name leaves the default table's report as it was."""
    out = tmp_path / "abl"
    out.mkdir()
    (out / "ablations.md").write_text("the default table\n")
    ab.main(["--tables", "e", "--report-only", "--report-name", "ablations_e", "--output", str(out),
             "--work-dir", str(tmp_path / "work")])
    assert (out / "ablations.md").read_text() == "the default table\n"
    text = (out / "ablations_e.md").read_text()
    assert "(e) defaults the paper does not print" in text and "every printed form at once" in text
    assert (out / "ablations_e.json").is_file()
