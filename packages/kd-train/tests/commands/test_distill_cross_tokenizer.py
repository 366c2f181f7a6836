"""``kd-train distill`` with a teacher that has its own tokenizer (``loss.cross_tokenizer``)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from kd_train.cli import main
from kd_train.models import llama_config, save_random_llama, train_tokenizer
from kd_train.pipelines.toydata import tool_call_records, write_jsonl
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

# The teacher's tokenizer is trained on other text, with another vocabulary size: the two
# cut the same completions differently and share only part of their vocabularies.
TEACHER_CORPUS = (
    "Pack my box with five dozen liquor jugs; the weather in Paris is mild.",
    '{"city": "Berlin", "unit": "fahrenheit"} call get_time and get_weather',
    "def mul(x, y):\n    return x * y  # héllo wörld\n",
    "0123456789 +-*/=()[]{}<>:;,.!?'\"_#@$%&|\\~^`",
)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    tok = train_tokenizer(TEACHER_CORPUS, vocab_size=420)
    path = tmp_path_factory.mktemp("cross-teacher")
    save_random_llama(path, llama_config(len(tok), hidden_size=48), tok, seed=3)
    # A random model is nearly uniform; a sharper head gives the student a shape to learn.
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    model.save_pretrained(path)
    return path


@pytest.fixture
def make_config(tmp_path, tiny_llama_dir, teacher_dir):
    write_jsonl(tmp_path / "train.jsonl", tool_call_records(24))

    def make(method="align", max_steps=6, **train):
        cfg = {
            "student": {"path": str(tiny_llama_dir)},
            "teacher": {"kind": "hf", "path": str(teacher_dir)},
            "data": {"train": "train.jsonl", "eval_fraction": 0.25, "max_length": 64},
            "loss": {"cross_tokenizer": {"method": method}, "weights": {"kd": 1.0, "ce": 0.1}},
            "optim": {"lr": 1e-2},
            "train": {
                "max_steps": max_steps,
                "batch_size": 4,
                "threads": 1,
                **{"eval_every": max_steps, **train},
            },
            "output_dir": f"run-{method}",
        }
        path = tmp_path / f"{method}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return make


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_the_tokenizers_really_differ(tiny_llama_dir, teacher_dir):
    from transformers import AutoTokenizer

    student = AutoTokenizer.from_pretrained(tiny_llama_dir)
    teacher = AutoTokenizer.from_pretrained(teacher_dir)
    text = tool_call_records(1)[0].completion
    assert len(student) != len(teacher)
    assert student.tokenize(text) != teacher.tokenize(text)


def test_without_cross_tokenizer_the_vocabulary_mismatch_is_refused(make_config, capsys):
    path = make_config()
    cfg = yaml.safe_load(path.read_text())
    del cfg["loss"]["cross_tokenizer"]
    path.write_text(yaml.safe_dump(cfg))
    assert main(["distill", "--config", str(path), "--no-progress"]) != 0
    assert "vocabulary mismatch" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["uld", "align"])
def test_cross_tokenizer_distill_moves_the_student_towards_the_teacher(make_config, method):
    path = make_config(method, max_steps=16, eval_every=1)
    assert main(["distill", "--config", str(path), "--no-progress"]) == 0
    metrics = rows(path.parent / f"run-{method}")
    held_out = [r["eval_kd"] for r in metrics]  # the same held-out records after every step
    assert all(torch.isfinite(torch.tensor(held_out)))
    assert held_out[-1] < 0.9 * held_out[0], held_out


def test_cross_tokenizer_run_resumes_bit_exactly(make_config, tmp_path):
    whole = make_config("align", max_steps=4, checkpoint_every=2)
    assert main(["distill", "--config", str(whole), "--no-progress"]) == 0
    reference = load_file(str(tmp_path / "run-align" / "student" / "model.safetensors"))
    reference_rows = rows(tmp_path / "run-align")

    cut = make_config("align", max_steps=4, checkpoint_every=2)
    cfg = yaml.safe_load(cut.read_text())
    cfg["output_dir"] = "run-cut"
    cut.write_text(yaml.safe_dump(cfg))
    assert main(["distill", "--config", str(cut), "--no-progress"]) == 0
    run = tmp_path / "run-cut"
    # Roll the run back to its step-2 checkpoint, as if it had been killed at step 3.
    shutil.rmtree(run / "checkpoints" / "step-00000004")
    shutil.rmtree(run / "student")
    assert main(["resume", str(run), "--no-progress"]) == 0
    resumed = load_file(str(run / "student" / "model.safetensors"))
    assert resumed.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(resumed[key], value), key
    assert [r["kd"] for r in rows(run)] == [r["kd"] for r in reference_rows]


def test_a_teacher_kind_without_its_own_model_is_refused_up_front(make_config, capsys):
    path = make_config()
    cfg = yaml.safe_load(path.read_text())
    cfg["teacher"] = {"kind": "records"}
    path.write_text(yaml.safe_dump(cfg))
    assert main(["distill", "--config", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "loss.cross_tokenizer: teacher.kind 'records' is not supported" in err
