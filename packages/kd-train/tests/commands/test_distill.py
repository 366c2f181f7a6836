import dataclasses
import json

import pytest
import yaml
from kd_train.cli import main
from kd_train.pipelines.toydata import tool_call_records, write_jsonl


@pytest.fixture
def config_file(tmp_path, tiny_llama_dir, tiny_teacher_dir):
    write_jsonl(tmp_path / "train.jsonl", tool_call_records(24))
    cfg = {
        "student": {"path": str(tiny_llama_dir)},
        "teacher": {"kind": "hf", "path": str(tiny_teacher_dir)},
        "data": {"train": "train.jsonl", "eval_fraction": 0.0, "max_length": 48},
        "train": {"max_steps": 3, "batch_size": 4, "threads": 1, "checkpoint_every": 2},
        "output_dir": "run",
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_distill_trains_from_a_yaml_config_relative_to_its_directory(config_file, capsys):
    assert main(["distill", "--config", str(config_file), "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["step"] == 3
    assert printed["run_dir"] == str(config_file.parent / "run")
    assert (config_file.parent / "run" / "student" / "config.json").exists()


def test_output_dir_flag_overrides_the_config(config_file, tmp_path):
    other = tmp_path / "elsewhere"
    assert (
        main(["distill", "--config", str(config_file), "--output-dir", str(other), "--no-progress"])
        == 0
    )
    assert (other / "metrics.jsonl").exists()


def test_invalid_config_exits_2_with_the_key_path_and_no_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("student: {path: s}\ndata: {train: d}\ntrain: {max_steps: 0}\noutput_dir: o\n")
    assert main(["distill", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: train.max_steps: must be >= 1, got 0" in err
    assert "Traceback" not in err


def test_resume_continues_a_finished_run_and_reports_its_step(config_file, capsys):
    assert main(["distill", "--config", str(config_file), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["resume", str(config_file.parent / "run"), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 3


def test_resume_of_a_directory_that_is_not_a_run_exits_2(tmp_path, capsys):
    assert main(["resume", str(tmp_path)]) == 2
    assert "is not a kd-train run directory" in capsys.readouterr().err


def test_resume_of_a_moved_run_directory_writes_where_the_run_now_is(config_file, capsys):
    assert main(["distill", "--config", str(config_file), "--no-progress"]) == 0
    original = config_file.parent / "run"
    moved = config_file.parent / "moved-run"
    original.rename(moved)
    capsys.readouterr()
    assert main(["resume", str(moved), "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (printed["run_dir"], printed["step"]) == (str(moved), 3)
    assert not original.exists()  # nothing written back to where the run first lived


def test_the_run_manifest_records_the_held_out_check(tmp_path, tiny_llama_dir, tiny_teacher_dir):
    rows = tool_call_records(20)
    rows[17] = dataclasses.replace(rows[4], id="copy-of-4")  # held out, repeats a training row
    write_jsonl(tmp_path / "train.jsonl", rows)
    cfg = {
        "student": {"path": str(tiny_llama_dir)},
        "teacher": {"kind": "hf", "path": str(tiny_teacher_dir)},
        "data": {"train": "train.jsonl", "eval_fraction": 0.2, "max_length": 48},
        "train": {"max_steps": 1, "batch_size": 4, "threads": 1},
        "output_dir": "run",
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["distill", "--config", str(tmp_path / "run.yaml"), "--no-progress"]) == 0
    held_out = json.loads((tmp_path / "run" / "run_manifest.json").read_text())["held_out"]
    assert held_out == {
        "split": "eval",
        "policy": "drop",
        "checked": 4,
        "overlapping": 1,
        "dropped": 1,
        "first": [["copy-of-4", rows[4].id]],
    }
