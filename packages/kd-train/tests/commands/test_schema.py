import json

import jsonschema
import pytest
from kd_train.cli import main
from kd_train.schemas import config_schemas, write_schemas

RUN = {
    "student": {"path": "s"},
    "teacher": {"kind": "http", "topk": 4, "http": {"base_url": "http://h/v1", "model": "m"}},
    "data": {"train": "d.jsonl", "eval": None},
    "loss": {"weights": {"kd": 1.0, "ce": {"start": 0.0, "end": 0.5, "warmup_steps": 10}}},
    "optim": {"betas": [0.9, 0.99]},
    "train": {"max_steps": 3, "clip_norm": None},
    "output_dir": "out",
}


def printed(name, capsys):
    assert main(["schema", name]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name", ["run", "loss", "generate"])
def test_schema_prints_the_json_schema_of_each_config(name, capsys):
    schema = printed(name, capsys)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema == config_schemas()[name]
    assert schema["additionalProperties"] is False


def test_the_printed_run_schema_accepts_a_run_config_and_refuses_an_unknown_key(capsys):
    validator = jsonschema.Draft202012Validator(printed("run", capsys))
    assert list(validator.iter_errors(RUN)) == []
    bad = {**RUN, "train": {"max_steps": 3, "max_step": 4}}
    (error,) = validator.iter_errors(bad)
    assert list(error.absolute_path) == ["train"]
    assert "max_step" in error.message


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"train": {"max_steps": 3, "precision": "fp16"}}, ["train", "precision"]),
        ({"optim": {"lr": -1.0}}, ["optim", "lr"]),
        ({"loss": {"weights": {"kl": 1.0}}}, ["loss", "weights"]),
        ({"distributed": {"strategy": "zero3"}}, ["distributed", "strategy"]),
    ],
)
def test_the_run_schema_refuses_bad_values_where_they_are(change, where, capsys):
    validator = jsonschema.Draft202012Validator(printed("run", capsys))
    errors = list(validator.iter_errors({**RUN, **change}))
    assert [list(e.absolute_path)[: len(where)] for e in errors] == [where]


def test_the_generate_schema_accepts_a_generate_config(capsys):
    config = {"prompts": "p.jsonl", "out": "o.jsonl", "base_url": "http://h/v1", "model": "m"}
    validator = jsonschema.Draft202012Validator(printed("generate", capsys))
    assert list(validator.iter_errors({**config, "retry": {"max_attempts": 2}})) == []
    assert list(validator.iter_errors({**config, "colour": "red"}))


def test_an_unknown_config_name_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["schema", "eval"])
    assert info.value.code == 2
    assert "invalid choice: 'eval'" in capsys.readouterr().err


def test_write_schemas_writes_one_file_per_config(tmp_path):
    paths = write_schemas(tmp_path / "schemas")
    assert [p.name for p in paths] == [
        "run.schema.json",
        "loss.schema.json",
        "generate.schema.json",
    ]
    assert json.loads(paths[0].read_text()) == config_schemas()["run"]
