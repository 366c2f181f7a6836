"""The docs' data directive renders committed files and fails loudly on a missing one."""

import importlib.util
import io
import json
from pathlib import Path

import pytest
from sphinx.application import Sphinx

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("kd_data", ROOT / "docs" / "_ext" / "kd_data.py")
kd_data = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kd_data)


def test_list_of_objects_becomes_one_row_per_object():
    header, rows = kd_data.rows_of([{"a": 1, "b": 0.123456}, {"a": 2, "c": "x"}])
    assert header == ["a", "b", "c"]
    assert rows == [["1", "0.1235", ""], ["2", "", "x"]]


def test_object_of_objects_becomes_one_row_per_key():
    header, rows = kd_data.rows_of({"kd_train": {"line": 91.0}, "kd_eval": {"line": 88.5}})
    assert header == ["name", "line"]
    assert rows == [["kd_train", "91"], ["kd_eval", "88.5"]]


def test_select_walks_objects_and_lists(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"runs": [{"x": 1}, {"x": 2}]}))
    assert kd_data.load_data(path, "runs.1") == {"x": 2}


def test_a_scalar_cannot_be_a_table():
    with pytest.raises(ValueError, match="cannot render int"):
        kd_data.rows_of(3)


def _build(tmp_path, body):
    src = tmp_path / "src"
    src.mkdir()
    ext = str(ROOT / "docs" / "_ext")
    (src / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {ext!r})\nextensions = ['kd_data']\n"
    )
    (src / "index.rst").write_text(f"Title\n=====\n\n{body}\n")
    warnings = io.StringIO()
    out = tmp_path / "out"
    app = Sphinx(src, src, out, tmp_path / "dt", "html", status=None, warning=warnings)
    app.build()
    return app.statuscode, warnings.getvalue(), (out / "index.html").read_text()


def test_directive_renders_a_committed_file(tmp_path):
    status, warnings, html = _build(tmp_path, ".. kd-data-table:: qa/gates.toml\n   :select: perf")
    assert status == 0, warnings
    assert "tolerance" in html
    assert "1.25" in html


def test_directive_fails_the_build_on_a_missing_file(tmp_path):
    _, warnings, html = _build(tmp_path, ".. kd-data-table:: qa/perf/results/no-such.json")
    assert "kd-data-table: qa/perf/results/no-such.json: FileNotFoundError" in warnings
    assert "<table" not in html
