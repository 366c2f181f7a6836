"""The warm mutation engine's parts: mutants, their selection, the report and its page."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import pytest

from qa import gates
from qa.mutation import changes, html_report, stryker
from qa.mutation.__main__ import Outcome, from_report, judge, module_files, parse_shard, select
from qa.mutation.mutants import Mutant, find, mutate

SOURCE = '''\
from __future__ import annotations

LIMIT: int | None = None
STRICT = True


def clip(x: float, lo: float = 0.0) -> float:
    """Docstrings are not mutated."""
    if x < lo and STRICT:
        return lo
    return x * 2 if not x else x


class Box:
    size = 3 + 1

    def grow(self, n: int) -> int:
        self.size += n
        return self.size
'''


def test_mutants_skip_annotations_docstrings_and_name_the_function_that_holds_them() -> None:
    found = find(SOURCE)
    assert all(m.line not in (1, 3) for m in found)  # the annotation ``int | None``
    by_place = {(m.line, m.mutator, m.replacement): m for m in found}
    assert by_place[(9, "EqualityOperator", ">=")].function == "clip"
    assert by_place[(9, "LogicalOperator", "or")].function_line == 7
    assert by_place[(11, "UnaryOperator", "removed")].function == "clip"
    assert by_place[(18, "AssignmentOperator", "-=")].function == "Box.grow"
    # import-time mutants: a module constant and a class attribute
    assert by_place[(4, "BooleanLiteral", "False")].static
    assert by_place[(15, "ArithmeticOperator", "-")].static


def test_each_mutant_changes_its_function_and_nothing_else() -> None:
    original = compile(SOURCE, "m.py", "exec")

    def codes(code: types.CodeType) -> dict[tuple[str, int], types.CodeType]:
        out = {(code.co_qualname, code.co_firstlineno): code}
        for k in code.co_consts:
            if isinstance(k, types.CodeType):
                out.update(codes(k))
        return out

    before = codes(original)
    for m in find(SOURCE):
        after = codes(compile(mutate(SOURCE, m.index), "m.py", "exec"))
        changed = {k for k in before if before[k] != after[k]} - {("<module>", 1)}
        if m.static:
            continue
        # the function named by the mutant changed (the engine swaps exactly that code)
        assert (m.function, m.function_line) in changed, m


@pytest.mark.parametrize(
    "module",
    ["kd_train.losses", "kd_train.trainer.checkpoint", "kd_train.data.validate"],
)
def test_every_function_mutant_of_a_critical_module_names_a_real_code_object(module: str) -> None:
    path = gates.module_path(module)
    assert path is not None
    for file in module_files(path):
        source = file.read_text(encoding="utf-8")
        names = set()
        stack = [compile(source, str(file), "exec")]
        while stack:
            c = stack.pop()
            names.add((c.co_qualname, c.co_firstlineno))
            stack += [k for k in c.co_consts if isinstance(k, types.CodeType)]
        for m in find(source):
            assert m.static or (m.function, m.function_line) in names, (file, m)


class _T:
    def __init__(self, path: Path) -> None:
        self.path = path


def _pairs(root: Path, n: int) -> list[tuple[Any, Mutant]]:
    t = _T(root / "packages" / "p" / "src" / "p" / "m.py")
    return [(t, m) for m in find("def f(a, b):\n" + "    x = a < b\n" * n)]


def test_shards_split_the_complete_run_exactly_once(tmp_path: Path) -> None:
    everything = _pairs(tmp_path, 7)
    seen: list[Mutant] = []
    for i in range(1, 4):
        part = select(everything, root=tmp_path, mode="shard", shard=(i, 3))
        seen += [m for _, m in part]
    assert sorted(m.index for m in seen) == list(range(len(everything)))
    assert parse_shard("3/3") == (3, 3)


def test_quick_mode_picks_the_mutants_on_changed_lines(tmp_path: Path) -> None:
    everything = _pairs(tmp_path, 4)
    rel = "packages/p/src/p/m.py"
    picked = select(everything, root=tmp_path, mode="quick", changed={rel: {3}})
    assert {m.line for _, m in picked} == {3}
    assert select(everything, root=tmp_path, mode="quick", changed={"other.py": {3}}) == []
    untracked = select(
        everything, root=tmp_path, mode="quick", changed={rel: set(changes.ALL_LINES)}
    )
    assert len(untracked) == len(everything)


def test_a_changed_test_file_or_conftest_belongs_to_the_module() -> None:
    tests = ["packages/kd-train/tests/data/test_validate.py"]
    assert changes.tests_changed(["packages/kd-train/tests/data/test_validate.py"], tests)
    assert changes.tests_changed(["packages/kd-train/tests/conftest.py"], tests)
    assert changes.tests_changed(["conftest.py"], tests)
    assert not changes.tests_changed(["packages/kd-train/tests/data/test_jsonl.py"], tests)
    folder = ["packages/kd-train/tests/losses"]
    assert changes.tests_changed(["packages/kd-train/tests/losses/test_chunked.py"], folder)


def test_a_sampled_score_comes_with_its_wilson_interval() -> None:
    counts = stryker.Counts.of(["Killed"] * 18 + ["Survived"] * 2)
    o = Outcome("m", "ok", 80.0, counts, total=200, selected=20)
    assert o.score_text() == "90.0% [95% CI 70-97]"
    o = judge(o, gates.MutationModule("m", 95.0, (), 1), "sample")
    assert o.status == "ok"  # 95 lies inside the interval: a sample cannot fail it
    complete = judge(
        Outcome("m", "ok", 95.0, counts, 20, 20), gates.MutationModule("m", 95.0, (), 1), "complete"
    )
    assert complete.status == "BELOW FLOOR"
    assert "CI" not in complete.score_text()


def _report(statuses: list[str], files: list[str] | None = None) -> dict[str, object]:
    rep = stryker.new_report(
        80,
        60,
        {"modules": {"m": {"files": ["a.py"], "total": len(statuses), "selected": len(statuses)}}},
    )
    rep["files"] = {
        "a.py": {
            "language": "python",
            "source": "x = 1\n" * 3,
            "mutants": [
                stryker.mutant_entry(f"a.py#{i}", "EqualityOperator", "<", (1, 1, 1, 6), s)
                for i, s in enumerate(statuses)
            ],
        }
    }
    return rep


def test_the_report_follows_the_schema_and_a_broken_one_is_named() -> None:
    rep = _report(["Killed", "Survived", "NoCoverage", "Timeout"])
    assert stryker.problems(rep) == []
    assert stryker.module_counts(rep, ["a.py"]).score == 50.0
    bad = json.loads(json.dumps(rep))
    bad["files"]["a.py"]["mutants"][0]["status"] = "Dead"
    bad["files"]["a.py"]["mutants"][1]["location"]["start"]["column"] = 0
    bad["thresholds"]["high"] = 101
    found = stryker.problems(bad)
    assert any("status: 'Dead'" in p for p in found)
    assert any("location.start" in p for p in found)
    assert any("thresholds.high" in p for p in found)


def test_merged_shards_judge_the_whole_module_and_a_missing_shard_fails() -> None:
    a = _report(["Killed", "Pending", "Killed", "Pending"])
    b = _report(["Pending", "Survived", "Pending", "Killed"])
    cfg = gates.MutationGates(1, 4.0, 1.0, 1.0, 1, {"m": gates.MutationModule("m", 70.0, (), 1)})
    merged = stryker.merge([a, b])
    [o] = from_report(merged, cfg, ["m"])
    assert (o.status, o.counts.score if o.counts else None) == ("ok", 75.0)
    [o] = from_report(stryker.merge([a]), cfg, ["m"])
    assert o.status == "INCOMPLETE"
    assert o.failed


def test_the_html_page_shows_each_surviving_mutant_under_its_line_offline() -> None:
    rep = _report(["Killed", "Survived"])
    page = html_report.page(rep, "t")
    assert "Survived: col 1 EqualityOperator -&gt; &lt;" in page
    assert "http" not in page.replace("https://git.io", "")  # no network, no CDN
    assert "<script" not in page
