import json

import pytest
from kd_eval.errors import ConfigError
from kd_eval.tasks.fixtures import load_fixtures
from kd_eval.tasks.toolcalls import ToolCall


def test_recorded_results_are_found_by_canonical_call(tmp_path):
    path = tmp_path / "fx.json"
    path.write_text(json.dumps([{"name": "f", "arguments": {"b": 1, "a": 2}, "result": "ok"}]))
    assert load_fixtures(path)[ToolCall("f", {"a": 2, "b": 1}).key()] == "ok"


@pytest.mark.parametrize(
    ("content", "message"),
    [("{", "not valid JSON"), ('{"a": 1}', "JSON list"), ('[{"name": "f"}]', "entry 0")],
)
def test_bad_fixture_files_are_explained(tmp_path, content, message):
    path = tmp_path / "fx.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_fixtures(path)


def test_missing_fixture_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_fixtures(tmp_path / "none.json")
