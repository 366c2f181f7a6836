import json
from pathlib import Path
from typing import Any

from qa import gates
from qa.coverage.__main__ import cmd_check, cmd_ratchet
from qa.coverage.gate import Figures, check, figures, raise_hint

LOSSES = "packages/kd-train/src/kd_train/losses/kl.py"


def _file(covered: int, statements: int, cb: int, nb: int) -> dict[str, Any]:
    return {
        "summary": {
            "covered_lines": covered,
            "num_statements": statements,
            "covered_branches": cb,
            "num_branches": nb,
        }
    }


def _gates(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gates.toml"
    path.write_text(text)
    return path


GATES = """
[coverage]
diff = 90.0
[coverage.packages.kd_train]
line = 80.0
branch = 60.0
[coverage.modules."kd_train.losses"]
line = 95.0
branch = 90.0
"""


def test_package_figures_sum_files_not_percentages() -> None:
    report = {
        "files": {
            LOSSES: _file(9, 10, 1, 4),
            "packages/kd-train/src/kd_train/cli.py": _file(1, 90, 0, 0),
        }
    }
    assert figures(report, "kd_train") == Figures(10.0, 25.0, 100)
    assert figures(report, "kd_train.losses") == Figures(90.0, 25.0, 10)
    assert figures(report, "kd_eval") is None


def test_a_coverage_json_below_a_floor_fails(tmp_path: Path) -> None:
    report = tmp_path / "coverage.json"
    report.write_text(json.dumps({"files": {LOSSES: _file(1, 10, 0, 4)}}))
    rc = cmd_check(report, reports=tmp_path, gates_file=_gates(tmp_path, GATES))
    assert rc == 1
    data = json.loads((tmp_path / "coverage-summary.json").read_text())
    assert not data["passed"]
    assert {r["name"] for r in data["floors"] if r["failed"]} == {"kd_train", "kd_train.losses"}
    assert json.loads((tmp_path / "coverage-summary.json").read_text())["modules"][
        "kd_train.losses.kl"
    ] == {"line": 10.0, "branch": 0.0, "statements": 10}


def test_a_coverage_json_at_its_floors_passes(tmp_path: Path) -> None:
    report = tmp_path / "coverage.json"
    report.write_text(json.dumps({"files": {LOSSES: _file(19, 20, 9, 10)}}))
    assert cmd_check(report, reports=tmp_path, gates_file=_gates(tmp_path, GATES)) == 0
    assert json.loads((tmp_path / "coverage-summary.json").read_text())["passed"]


def test_missing_critical_module_fails_unless_pending(tmp_path: Path) -> None:
    text = GATES + '[coverage.modules."kd_train.nope"]\nline = 95.0\nbranch = 90.0\n'
    cov = gates.coverage(gates.read(_gates(tmp_path, text)))
    rows = {r.name: r for r in check({"files": {LOSSES: _file(10, 10, 4, 4)}}, cov)}
    assert rows["kd_train.nope"].status == "MISSING"
    assert rows["kd_train.nope"].failed
    cov = gates.coverage(gates.read(_gates(tmp_path, text + "pending = true\n")))
    rows = {r.name: r for r in check({"files": {LOSSES: _file(10, 10, 4, 4)}}, cov)}
    assert rows["kd_train.nope"].status == "PENDING"
    assert not rows["kd_train.nope"].failed


def test_a_figure_a_point_above_its_floor_asks_to_raise_it() -> None:
    floor = gates.CoverageFloor(line=90.0, branch=80.0)
    assert raise_hint(Figures(90.9, 80.5, 1), floor) == ""
    assert raise_hint(Figures(92.0, 85.2, 1), floor) == "RAISE line floor to 92, branch floor to 85"


def test_a_lowered_floor_is_named() -> None:
    old = gates.read()
    new = gates.read()
    new["mutation"]["modules"]["kd_train.losses"]["score"] = 1.0
    before = old["mutation"]["modules"]["kd_train.losses"]["score"]
    assert gates.lowered_floors(old, new) == [
        f"mutation.modules.kd_train.losses.score: {before} -> 1.0"
    ]
    assert gates.lowered_floors(old, old) == []


def test_ratchet_against_an_unknown_ref_fails() -> None:
    assert cmd_ratchet("no-such-ref-for-sure") == 1
