"""The published JSON Schema of the run config accepts every run config the docs show.

The site publishes ``kd_train.schemas.write_schemas`` output (docs/_ext/kd_schemas.py); the
configs are the run config of the training guide and the teacher configs of the teachers
guide, which the real parser accepts too (tests/docs/test_teacher_configs.py).
"""

import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from kd_train.schemas import write_schemas
from kd_train.trainer import parse_config

DOCS = Path(__file__).resolve().parents[2] / "docs" / "guides"
TEACHER_BLOCK = re.compile(r"```yaml\n# kd-config: (\w+)\n(.*?)```", re.DOTALL)
FIRST_YAML = re.compile(r"## A run config\n\n```yaml\n(.*?)```", re.DOTALL)


def shown_configs() -> dict[str, dict]:
    teachers = (DOCS / "teachers.md").read_text(encoding="utf-8")
    configs = {name: yaml.safe_load(body) for name, body in TEACHER_BLOCK.findall(teachers)}
    training = FIRST_YAML.search((DOCS / "training.md").read_text(encoding="utf-8"))
    assert training is not None
    configs["training guide"] = yaml.safe_load(training.group(1))
    return configs


@pytest.fixture(scope="module")
def validator(tmp_path_factory):
    published = write_schemas(tmp_path_factory.mktemp("site") / "schemas")
    run = next(p for p in published if p.name == "run.schema.json")
    return jsonschema.Draft202012Validator(yaml.safe_load(run.read_text(encoding="utf-8")))


def test_the_docs_show_the_run_configs_checked_here():
    assert sorted(shown_configs()) == ["cached", "hf", "http", "records", "training guide"]


@pytest.mark.parametrize("name", ["cached", "hf", "http", "records", "training guide"])
def test_the_published_schema_accepts_the_run_configs_of_the_docs(validator, name):
    config = shown_configs()[name]
    assert [e.message for e in validator.iter_errors(config)] == []
    parse_config(config)  # and so does the loader


def test_the_published_schema_refuses_a_docs_config_with_an_unknown_key(validator):
    config = shown_configs()["training guide"]
    config["teacher"] = {**config["teacher"], "kinds": "hf"}
    (error,) = validator.iter_errors(config)
    assert list(error.absolute_path) == ["teacher"]
    assert "'kinds'" in error.message
