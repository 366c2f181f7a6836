"""Non-finite values stop a run: refused in configs, and stopping training when they appear.

Run-time faults are planted in real tiny runs: a loss weight so large that the loss's
gradient is infinite, and a learning rate so large that the weights blow up. Each stops the
run with the step and the term named (exit 2 through the CLI), keeps the last good
checkpoint byte for byte, writes no NaN weights anywhere, and the run resumes afterwards.
"""

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from kd_train.cli import main
from kd_train.pipelines.toydata import tool_call_records, write_jsonl
from kd_train.trainer import parse_config, train
from kd_train.trainer.checkpoint import (
    NonFiniteError,
    checkpoint_dirs,
    latest_checkpoint,
    require_finite_step,
    verify_checkpoint,
)
from kd_train.trainer.metrics import read_metrics
from safetensors.torch import load_file


def files_of(directory):
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def all_finite(weights_file):
    return all(bool(torch.isfinite(t).all()) for t in load_file(str(weights_file)).values())


def test_an_infinite_loss_gradient_stops_the_first_step_and_writes_nothing(make_config):
    cfg = make_config(loss={"weights": {"kd": 1e38, "ce": 0.5}}, train={"checkpoint_every": 1})
    with pytest.raises(NonFiniteError, match=r"^step 1: non-finite grad_norm=inf; training stop"):
        train(parse_config(cfg), progress=False)
    run_dir = Path(cfg["output_dir"])
    assert checkpoint_dirs(run_dir) == []
    assert not (run_dir / "student").exists()


def test_a_huge_learning_rate_stops_at_the_step_whose_loss_is_nan(make_config, tmp_path):
    cfg = make_config(
        optim={"lr": 1e30, "warmup_steps": 0},
        train={"checkpoint_every": 1, "keep_checkpoints": 10},
    )
    with pytest.raises(NonFiniteError) as info:
        train(parse_config(cfg), progress=False)
    message = str(info.value)
    assert message.startswith("step 2: non-finite ")
    assert "loss=nan" in message
    assert "grad_norm=nan" in message
    run_dir = tmp_path / "run"
    assert [p.name for p in checkpoint_dirs(run_dir)] == ["step-00000001"]
    assert all_finite(run_dir / "checkpoints" / "step-00000001" / "model.safetensors")
    assert not (run_dir / "student").exists()
    assert [row["step"] for row in read_metrics(run_dir / "metrics.jsonl")] == [1]


@pytest.fixture
def finished_run(tmp_path, tiny_llama_dir, tiny_teacher_dir, capsys):
    """A 3-step CLI run with a checkpoint at every step."""
    write_jsonl(tmp_path / "train.jsonl", tool_call_records(24))
    cfg = {
        "student": {"path": str(tiny_llama_dir)},
        "teacher": {"kind": "hf", "path": str(tiny_teacher_dir)},
        "data": {"train": "train.jsonl", "eval_fraction": 0.0, "max_length": 48},
        "loss": {"weights": {"kd": 1.0, "ce": 0.5}},
        "train": {"max_steps": 3, "batch_size": 4, "threads": 1, "checkpoint_every": 1},
        "output_dir": "run",
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["distill", "--config", str(tmp_path / "run.yaml"), "--no-progress"]) == 0
    capsys.readouterr()
    return tmp_path / "run"


def test_a_non_finite_step_after_resume_keeps_the_last_good_checkpoint_which_resumes(
    finished_run, capsys
):
    run_dir = finished_run
    config_file = run_dir / "config.json"
    original = json.loads(config_file.read_text())
    kept = files_of(run_dir / "checkpoints")
    student = files_of(run_dir / "student")

    planted = json.loads(json.dumps(original))
    planted["train"]["max_steps"] = 6
    planted["loss"]["weights"]["kd"] = 1e38  # finite, but the loss's gradient overflows
    config_file.write_text(json.dumps(planted))
    flags = ["--allow-change", "train.max_steps", "--allow-change", "loss.weights.kd"]
    assert main(["resume", str(run_dir), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kd-train: error: step 4: non-finite grad_norm=inf; training stopped")
    assert err.count("\n") == 1
    assert "Traceback" not in err
    # The last good checkpoint (and the older ones, and the student) are untouched.
    assert files_of(run_dir / "checkpoints") == kept
    assert files_of(run_dir / "student") == student
    assert all_finite(run_dir / "student" / "model.safetensors")
    verify_checkpoint(latest_checkpoint(run_dir))

    # Back to the run's own loss weights: it resumes from step 3 and finishes.
    planted["loss"]["weights"]["kd"] = 1.0
    config_file.write_text(json.dumps(planted))
    assert main(["resume", str(run_dir), "--no-progress", "--allow-change", "train.max_steps"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 6
    assert all_finite(run_dir / "student" / "model.safetensors")


def test_the_step_check_names_every_non_finite_term():
    with pytest.raises(NonFiniteError, match=r"^step 7: non-finite kd=nan, grad_norm=-inf;"):
        require_finite_step(7, {"kd": math.nan, "ce": 1.0, "grad_norm": -math.inf})


def test_a_non_finite_value_on_another_process_stops_this_one_too():
    with pytest.raises(NonFiniteError, match="a loss term or gradient norm on another process"):
        require_finite_step(2, {"loss": 1.0, "grad_norm": 0.5}, elsewhere=True)


def test_finite_values_pass():
    require_finite_step(1, {"loss": 0.0, "grad_norm": 1e30})


# ---- non-finite config numbers are refused when the config is parsed ------------------------


@pytest.mark.parametrize(
    ("text", "path", "value"),
    [
        ("optim: {lr: .inf}", "optim.lr", "inf"),
        ("train: {max_steps: 2, clip_norm: .nan}", "train.clip_norm", "nan"),
        ("loss: {temperature: -.inf}", "loss.temperature", "-inf"),
        ("loss: {weights: {kd: .NaN}}", "loss.weights.kd", "nan"),
        ("optim: {betas: [0.9, .nan]}", "optim.betas[1]", "nan"),
    ],
)
def test_non_finite_yaml_numbers_exit_2_naming_the_key(tmp_path, capsys, text, path, value):
    config_file = tmp_path / "run.yaml"
    config_file.write_text(
        "student: {path: s}\ndata: {train: d.jsonl}\noutput_dir: o\n"
        + ("" if text.startswith("train") else "train: {max_steps: 2}\n")
        + text
        + "\n"
    )
    assert main(["distill", "--config", str(config_file), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{config_file}: {path}: must be a finite number, got {value}" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_toml_numbers_exit_2_naming_the_key(tmp_path, capsys, value):
    config_file = tmp_path / "run.toml"
    config_file.write_text(
        'output_dir = "o"\n[student]\npath = "s"\n[data]\ntrain = "d.jsonl"\n'
        f"[train]\nmax_steps = 2\n[optim]\nweight_decay = {value}\n"
    )
    assert main(["distill", "--config", str(config_file), "--no-progress"]) == 2
    assert "optim.weight_decay: must be a finite number" in capsys.readouterr().err


def test_a_non_finite_number_inside_a_student_config_is_refused_at_its_path():
    from kd_train.trainer.config import RunConfigError

    student = {"config": {"model_type": "llama", "rope_scaling": {"factor": math.inf}}}
    config = {"student": {**student, "tokenizer": "t"}, "data": {"train": "d"}, "output_dir": "o"}
    with pytest.raises(RunConfigError, match=r"^student\.config\.rope_scaling\.factor: must be a"):
        parse_config({**config, "train": {"max_steps": 1}})


def test_a_number_too_big_for_float32_is_refused(make_config):
    from kd_train.trainer.config import RunConfigError

    with pytest.raises(RunConfigError, match=r"^optim\.lr: must be at most 3\.403e\+38 in size"):
        parse_config(make_config(optim={"lr": 1e39}))


@pytest.mark.parametrize(
    "flag",
    ["--budget", "--temperature", "--timeout", "--price-per-1k-prompt", "--rpm"],
)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999"])
def test_non_finite_numeric_flags_of_generate_exit_2(tmp_path, capsys, flag, value):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "a", "prompt": "hi"}\n')
    argv = ["generate", "--prompts", str(prompts), "--out", str(tmp_path / "out.jsonl")]
    argv += ["--base-url", "http://127.0.0.1:9/v1", "--model", "m", f"{flag}={value}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "finite" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out.jsonl").exists()


def free_form_fields(model, prefix=""):
    """Key paths of config fields that take any value unchecked (``Any``), at every depth."""
    from typing import Any, get_args

    from pydantic import BaseModel
    from typing_extensions import TypeAliasType

    def walk(annotation, path):
        if annotation is Any:
            yield path
        elif isinstance(annotation, TypeAliasType):  # Json: checked recursively
            return
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for name, field in annotation.model_fields.items():
                yield from walk(field.annotation, f"{path}.{name}".lstrip("."))
        else:
            for arg in get_args(annotation):
                yield from walk(arg, path)

    return list(walk(model, prefix))


def test_no_config_field_takes_numbers_without_the_finite_check():
    from kd_train.generate.config import GenerateConfig
    from kd_train.losses import LossConfig
    from kd_train.trainer.config import RunConfig

    for model in (RunConfig, LossConfig, GenerateConfig):
        assert free_form_fields(model) == [], model.__name__
