"""Secrets never reach logs, stores or manifests, in any form a user can supply them.

Each form is planted, then every file the run wrote, its standard output and error and
every log record (all loggers, DEBUG) are searched for the secret. A credential in the
endpoint URL is refused before anything is written; the message describes it without it.
"""

import json
import logging

import pytest
from kd_train.cli import main
from kd_train.testing import FaultPlan, LoopbackTeacherServer, generate_argv
from kd_train.trainer.config import RunConfigError, parse_config

SECRET = "sk-planted-7f3a9c"


def files_holding(root, secret=SECRET):
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.fixture
def everything(caplog, capsys):
    caplog.set_level(logging.DEBUG)

    def text():
        captured = capsys.readouterr()
        return captured.out + captured.err + caplog.text

    return text


def test_key_from_the_environment_reaches_no_file_log_or_output(
    tiny_teacher_dir, prompts_file, tmp_path, monkeypatch, everything
):
    monkeypatch.setenv("KD_PLANTED_KEY", SECRET)
    faults = FaultPlan(script=["429", "500", "drop", "malformed"])  # retries are logged
    with LoopbackTeacherServer(tiny_teacher_dir, api_key=SECRET, faults=faults) as server:
        argv = generate_argv(server.base_url, prompts_file, tmp_path / "run" / "out.jsonl",
                             api_key_env="KD_PLANTED_KEY", budget=5, max_attempts=6)  # fmt: skip
        assert main(argv) == 0
        assert server.counts["unauthorized"] == 0  # the key was sent
    seen = everything()
    assert "retry" in seen
    assert SECRET not in seen
    assert (tmp_path / "run" / "out.jsonl.teacher.json").is_file()
    assert files_holding(tmp_path) == []


@pytest.mark.parametrize(
    "base_url",
    [
        f"http://user:{SECRET}@127.0.0.1:9/v1",
        f"http://{SECRET}@127.0.0.1:9/v1",
        f"http://127.0.0.1:9/v1?api_key={SECRET}",
        f"http://127.0.0.1:9/v1?api-version=1&token={SECRET}",
    ],
)
@pytest.mark.parametrize("via", ["flag", "config"])
def test_credential_in_the_endpoint_url_is_refused_unseen(
    prompts_file, tmp_path, everything, base_url, via
):
    out = tmp_path / "run" / "out.jsonl"
    argv = generate_argv("http://127.0.0.1:9/v1", prompts_file, out)
    if via == "flag":
        argv[argv.index("--base-url") + 1] = base_url
    else:
        config = tmp_path / "gen.yaml"
        config.write_text(json.dumps({"base_url": base_url}))
        argv = [a for a in argv if a not in ("--base-url", "http://127.0.0.1:9/v1")]
        argv += ["--config", str(config)]
    assert main(argv) == 2
    seen = everything()
    assert "base_url: carries " in seen
    assert "api_key_env" in seen
    assert SECRET not in seen
    assert not (tmp_path / "run").exists()


def test_the_key_given_in_place_of_its_variable_name_is_refused_unseen(
    prompts_file, tmp_path, everything
):
    argv = generate_argv("http://127.0.0.1:9/v1", prompts_file, tmp_path / "run" / "o.jsonl",
                         api_key_env=SECRET)  # fmt: skip
    assert main(argv) == 2
    seen = everything()
    assert "api_key_env: must be the NAME of the environment variable" in seen
    assert SECRET not in seen
    assert not (tmp_path / "run").exists()


def test_a_key_with_a_line_break_is_refused_unseen(
    server, prompts_file, tmp_path, monkeypatch, everything
):
    monkeypatch.setenv("KD_PLANTED_KEY", SECRET + "\n")
    argv = generate_argv(server.base_url, prompts_file, tmp_path / "run" / "out.jsonl",
                         api_key_env="KD_PLANTED_KEY")  # fmt: skip
    assert main(argv) == 2
    seen = everything()
    assert "characters an HTTP header cannot carry" in seen
    assert SECRET not in seen
    assert files_holding(tmp_path) == []


@pytest.mark.parametrize(
    "store",
    [
        f"postgresql://kd:{SECRET}@127.0.0.1:1/kd",
        f"postgresql://kd@127.0.0.1:1/kd?password={SECRET}",
        f"postgresql://kd:{SECRET}@127.0.0.1:notaport/kd",
    ],
)
def test_a_store_password_is_hidden_in_every_message(prompts_file, tmp_path, everything, store):
    argv = generate_argv("http://127.0.0.1:9/v1", prompts_file, tmp_path / "run" / "out.jsonl",
                         store=store)  # fmt: skip
    assert main(argv) == 2
    seen = everything()
    assert "store" in seen
    assert SECRET not in seen


@pytest.mark.parametrize(
    ("http", "message"),
    [
        ({"base_url": f"http://u:{SECRET}@h/v1"}, "teacher.http.base_url: carries a user name"),
        ({"base_url": f"http://h/v1?key={SECRET}"}, "teacher.http.base_url: carries the query"),
        ({"api_key_env": SECRET}, "teacher.http.api_key_env: must be the NAME"),
        ({"budget": 1.0}, "teacher.http.budget: a budget needs prices: set price_per_1k_prompt"),
        ({"change_budget": True}, "teacher.http.change_budget: needs teacher.http.budget"),
    ],
)
def test_a_run_config_refuses_the_same_forms_naming_teacher_http(http, message):
    teacher = {"kind": "http", "topk": 4, "http": {"base_url": "http://h/v1", "model": "m", **http}}
    config = {
        "student": {"path": "s"},
        "data": {"train": "d.jsonl"},
        "train": {"max_steps": 3},
        "output_dir": "out",
        "teacher": teacher,
    }
    with pytest.raises(RunConfigError, match=message) as err:
        parse_config(config)
    assert SECRET not in str(err.value)
