from pathlib import Path

import pytest
from kd_train.errors import KDTrainError
from kd_train.generate.config import generate_config, load_config_file
from kd_train.store import sqlite_url

BASE = {"prompts": "p.jsonl", "out": "o/out.jsonl", "base_url": "http://h/v1", "model": "m"}


def test_config_defaults_store_to_sqlite_next_to_output():
    cfg = generate_config(dict(BASE), "flags")
    assert cfg.store_url == sqlite_url(Path("o") / "kd-store.sqlite")


def test_retry_settings_reach_the_teacher_config():
    cfg = generate_config({**BASE, "retry": {"max_attempts": 2, "base_delay": 0.0}}, "flags")
    assert (cfg.teacher.retry.max_attempts, cfg.teacher.retry.base_delay) == (2, 0.0)


def test_public_config_names_the_key_variable_not_the_key():
    cfg = generate_config({**BASE, "api_key_env": "MY_KEY"}, "flags")
    assert cfg.public()["api_key_env"] == "MY_KEY"
    assert "api_key" not in cfg.public()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, r"^gen\.yaml: colour: unknown key \(allowed: api, api_key_env,"),
        ({"model": None}, r"^gen\.yaml: model: required key is missing$"),
        ({"retry": {"tries": 3}}, r"^gen\.yaml: retry\.tries: unknown key \(allowed: base_delay,"),
        ({"concurrency": 0}, r"^gen\.yaml: concurrency: must be >= 1, got 0$"),
        ({"max_tokens": "many"}, r"^gen\.yaml: max_tokens: must be an integer, got 'many'$"),
        (
            {"api": "edit"},
            r"^gen\.yaml: api: 'edit' is not allowed \(allowed: completions, chat\)$",
        ),
        ({"budget": float("nan")}, r"^gen\.yaml: budget: must be a finite number, got nan$"),
    ],
)
def test_invalid_config_is_refused_naming_the_key(change, message):
    with pytest.raises(KDTrainError, match=message):
        generate_config({**BASE, **change}, "gen.yaml")


def test_yaml_and_toml_files_load_to_the_same_mapping(tmp_path):
    (tmp_path / "a.yaml").write_text("model: m\nretry:\n  max_attempts: 2\n")
    (tmp_path / "a.toml").write_text('model = "m"\n[retry]\nmax_attempts = 2\n')
    assert load_config_file(tmp_path / "a.yaml") == load_config_file(tmp_path / "a.toml")


@pytest.mark.parametrize(("name", "text"), [("a.yaml", "- 1\n"), ("a.toml", "x = [")])
def test_unparsable_or_non_mapping_config_is_an_input_error(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    with pytest.raises(KDTrainError, match=name):
        load_config_file(tmp_path / name)


def test_the_endpoint_keys_are_those_of_the_teacher_config():
    import dataclasses

    from kd_train.generate.config import EndpointSettings, RetrySettings
    from kd_train.teachers.http import HTTPTeacherConfig
    from kd_train.teachers.retry import RetryPolicy

    assert list(EndpointSettings.model_fields) == [
        f.name for f in dataclasses.fields(HTTPTeacherConfig)
    ]
    assert list(RetrySettings.model_fields) == [f.name for f in dataclasses.fields(RetryPolicy)]
    assert generate_config(dict(BASE), "flags").teacher == HTTPTeacherConfig("http://h/v1", "m")


def test_every_problem_is_named_with_the_source():
    with pytest.raises(KDTrainError) as info:
        generate_config({**BASE, "timeout": 0, "retry": {"max_attempts": 0}}, "gen.yaml")
    assert str(info.value).splitlines() == [
        "gen.yaml: timeout: must be > 0.0, got 0",
        "gen.yaml: retry.max_attempts: must be >= 1, got 0",
    ]
