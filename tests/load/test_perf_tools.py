"""The perf runner's own pieces: machine id, results merge, charts, scenario results."""

import json

from qa.perf import common, report
from qa.perf.__main__ import select
from tests.load.scenarios import ScenarioResult


def test_machine_id_is_stable_and_depends_on_every_fact():
    facts = {"system": "Linux", "arch": "x86_64", "cpu": "CPU", "cores": 2, "mem_gib": 24}
    assert common.machine_id(facts) == common.machine_id(dict(facts))
    for key, other in (("cpu", "CPU2"), ("cores", 4), ("mem_gib", 32), ("arch", "arm64")):
        assert common.machine_id({**facts, key: other}) != common.machine_id(facts)
    assert common.machine_id(facts).startswith("2c-")


def test_machine_facts_hold_no_host_name():
    import socket

    assert socket.gethostname() not in json.dumps(common.machine_facts())


def test_merge_gathers_groups_and_skips_machine_files(tmp_path):
    (tmp_path / "data.json").write_text(json.dumps({"ratios": {"x": 1.0}}))
    (tmp_path / "load.json").write_text(json.dumps({"validator": {"checks": []}}))
    (tmp_path / "old.json").write_text(json.dumps({"machine": {"id": "z"}}))
    (tmp_path / "on_policy_evidence.json").write_text(json.dumps({"toy": {"steps": 300}}))
    merged = json.loads(report.merge(tmp_path).read_text())
    assert merged["benchmarks"] == {"data": {"ratios": {"x": 1.0}}}
    assert merged["load"] == {"validator": {"checks": []}}
    assert merged["machine"]["id"] == common.machine_id()


def test_every_group_gets_a_png_chart(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    sizes = {
        str(n): {"rows": n, **{f"{p}_rows_per_s": 1e4 * n for p in ("json", "stream", "read")},
                 **{f"{p}_peak_rss_mb": 100.0 for p in ("json", "stream", "read")}}
        for n in (10, 100, 1000)
    }  # fmt: skip
    (results / "data.json").write_text(json.dumps({"sizes": sizes}))
    (results / "other.json").write_text(json.dumps({"a": {"b": 3.0}, "c": 0.5}))
    check = {"name": "x", "observed": 0, "expected": 0, "ok": True}
    (results / "load.json").write_text(json.dumps({"validator": {"checks": [check]}}))
    (results / "showcase.json").write_text(json.dumps({"arms": {"ce": {"kl": 1.0}}}))
    written = report.draw_charts(results, tmp_path / "charts")
    assert sorted(p.name for p in written) == ["data.png", "load.png", "other.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)


def test_scenario_result_fails_on_any_failed_check_and_on_no_checks():
    result = ScenarioResult("s")
    assert not result.passed
    result.check("lost", 0, 0)
    assert result.passed
    result.check("dupes", 1, 0)
    assert not result.passed
    assert "[FAIL] dupes: 1 (expected 0)" in result.report()


def test_bench_only_selects_scripts_and_passes_the_rest(tmp_path):
    scripts = [tmp_path / "bench_data.py", tmp_path / "bench_losses.py"]
    chosen, rest = select(scripts, ["--only", "data", "--quick"])
    assert chosen == [scripts[0]]
    assert rest == ["--quick"]


def scaled_results() -> dict[str, dict]:
    """Small results of the losses, train and export groups, each at three sizes."""
    losses = {
        f"{loss}/v{v}/t{n}": {impl: {"seconds": n * v / 1e6, "peak_mb": n * v / 1e5}
                              for impl in ("naive", "chunked")}
        for loss in ("forward_kl", "jsd")
        for v, n in ((32000, 1024), (32000, 2048), (32000, 4096), (8192, 2048), (49152, 2048))
    }  # fmt: skip
    side = {"tokens_per_s": 100.0, "peak_growth_mb": 50.0}
    train = {"full": {"sizes": {b: {"kd": side, "trl": side} for b in ("8", "16", "32")}}}
    model = {"export_seconds": {"onnx": 1.0}, "latency_ms": {"torch": {"64": 1.0, "128": 2.0}}}
    export = {"sizes": {h: {"hidden": int(h), "parameters": int(h) ** 2, **model}
                        for h in ("64", "128", "256")}}  # fmt: skip
    cache = {"by_k": {str(k): {"bytes_per_token": 4 * k + 2, "kl_topk_tail": 1 / k,
                               "kl_storage_stored_tail": 1e-7} for k in (4, 16, 64)}}  # fmt: skip
    return {"losses": {"figures": losses}, "train": train, "export": export, "teacher_cache": cache}


def test_loss_points_group_by_loss_and_implementation():
    data = scaled_results()["losses"]
    data["figures"]["jsd/v8192/t2048"]["liger"] = {"error": "not runnable"}
    points = report._losses_points(data)
    assert sorted(points) == [(loss, impl) for loss in ("forward_kl", "jsd")
                              for impl in ("chunked", "naive")]  # fmt: skip
    assert sorted((v, n) for v, n, _ in points["jsd", "naive"])[0] == (8192, 2048)
    assert len(points["forward_kl", "chunked"]) == 5


def test_scaling_groups_get_their_own_charts_not_the_generic_bars(tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    for name, data in scaled_results().items():
        (results / f"{name}.json").write_text(json.dumps(data))
    generic = []
    monkeypatch.setattr(report, "chart_generic", lambda name, *a: generic.append(name))
    written = report.draw_charts(results, tmp_path / "charts")
    assert generic == []
    names = ["export.png", "losses.png", "teacher_cache.png", "train.png"]
    assert sorted(p.name for p in written) == names
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)


FAKE_SCENARIO = """
from tests.load.scenarios import ScenarioResult
QUICK = FULL = None
def run(config):
    result = ScenarioResult("fake")
    result.check("nothing lost", 0, 0)
    return result
"""


def _load_runner_at(tmp_path, monkeypatch):
    from tests.load import runner

    (tmp_path / "fake_scenario_mod.py").write_text(FAKE_SCENARIO)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(runner, "SCENARIOS", {"fake": "fake_scenario_mod"})
    monkeypatch.setattr(runner, "SCRATCH", tmp_path / "scratch")
    monkeypatch.setattr(runner, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(runner, "DOCS_CHARTS", tmp_path / "charts")
    return runner


def test_a_routine_load_run_writes_only_under_the_scratch_directory(tmp_path, monkeypatch):
    runner = _load_runner_at(tmp_path, monkeypatch)
    assert runner.main(["--quick"]) == 0
    assert json.loads((tmp_path / "scratch" / "load.json").read_text())["fake"]["mode"] == "quick"
    assert (tmp_path / "scratch" / "charts" / "load.png").is_file()
    assert not (tmp_path / "results").exists()
    assert not (tmp_path / "charts").exists()


def test_record_writes_the_load_results_into_the_record(tmp_path, monkeypatch):
    runner = _load_runner_at(tmp_path, monkeypatch)
    assert runner.main(["--quick", "--record"]) == 0
    assert (tmp_path / "results" / "load.json").is_file()
    assert (tmp_path / "charts" / "load.png").is_file()
    assert not (tmp_path / "scratch").exists()
