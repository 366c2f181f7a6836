import json
from dataclasses import replace

import pytest
from kd_train.data.holdout import HeldOutOverlapError
from kd_train.data.labels import MAGIC_8_BALL_ANSWERS
from kd_train.data.schema import SPAN_KINDS
from kd_train.pipelines import mean_forward_kl
from kd_train.pipelines.__main__ import main
from kd_train.pipelines.common import completion_kl, label_accuracy, split_held_out
from kd_train.pipelines.toydata import (
    TOOL_CALL_ROWS,
    eight_ball_answer,
    eight_ball_questions,
    eight_ball_records,
    tool_call_records,
)
from transformers import AutoTokenizer


def test_kl_of_a_model_to_itself_is_zero(tiny_llama_dir):
    assert abs(mean_forward_kl(tiny_llama_dir, tiny_llama_dir, ["hello world"])) < 1e-6
    records = tool_call_records(2)
    assert abs(completion_kl(tiny_llama_dir, tiny_llama_dir, records)) < 1e-6


def test_kl_between_different_models_is_positive(tiny_llama_dir, tiny_teacher_dir):
    assert completion_kl(tiny_teacher_dir, tiny_llama_dir, tool_call_records(2)) > 0


def test_toy_generators_never_repeat_a_row():
    rows = tool_call_records(TOOL_CALL_ROWS, seed=3)
    assert len({(r.prompt, r.completion) for r in rows}) == TOOL_CALL_ROWS == 9828
    assert tool_call_records(48, seed=3)[:40] == tool_call_records(40, seed=3)
    with pytest.raises(ValueError, match="at most 9828 distinct rows"):
        tool_call_records(TOOL_CALL_ROWS + 1)
    balls = eight_ball_records()
    assert len({(r.prompt, r.completion) for r in balls}) == len(balls) == 245


def test_a_pipeline_split_that_repeats_training_rows_is_refused(tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    rows = tool_call_records(10)
    train, held = split_held_out(rows, 8, tokenizer)
    assert (len(train), len(held)) == (8, 2)
    leaky = [*rows[:8], replace(rows[1], id="again")]
    with pytest.raises(HeldOutOverlapError, match=r"1 of 1 held-out examples"):
        split_held_out(leaky, 8, tokenizer)


def test_tool_call_records_are_deterministic_and_spans_cover_their_text():
    records = tool_call_records(30, seed=7)
    assert records == tool_call_records(30, seed=7)
    kinds = {span.kind for r in records for span in r.spans}
    assert kinds == {"tool_name", "json_args", "code_mode"}
    assert kinds <= set(SPAN_KINDS)
    for record in records:
        for span in record.spans:
            text = record.completion[span.start : span.end]
            if span.kind == "json_args":
                json.loads(text)
            if span.kind == "tool_name":
                assert text in {"get_weather", "send_message", "get_time"}


def test_eight_ball_answers_depend_only_on_verb_and_time():
    pairs = eight_ball_questions()
    assert len(pairs) == 245
    assert all(answer in MAGIC_8_BALL_ANSWERS for _, answer in pairs)
    assert len(MAGIC_8_BALL_ANSWERS) == 20
    assert eight_ball_answer("win", "today") == dict(pairs)["Will the cat win today?"]
    assert eight_ball_records(seed=1) == eight_ball_records(seed=1)


def test_label_accuracy_scores_completions_against_the_label_set(tiny_llama_dir):
    records = eight_ball_records()[:2]
    assert label_accuracy(tiny_llama_dir, records, MAGIC_8_BALL_ANSWERS) in (0.0, 0.5, 1.0)
    assert label_accuracy(tiny_llama_dir, records, [r.completion[1:] for r in records[:1]]) == 0.5


def test_toy_pipeline_writes_its_figures_and_reports_them(tmp_path, capsys):
    assert main(["toy", "--out", str(tmp_path), "--steps", "3", "--no-progress"]) == 0
    summary = json.loads((tmp_path / "toy" / "summary.json").read_text())
    assert summary["student_heldout_kl_before"] > 0
    assert (tmp_path / "toy" / "distill-run" / "student" / "model.safetensors").exists()
    out = capsys.readouterr().out
    assert "student KL to teacher, held out" in out
    assert str(tmp_path / "summary.json") in out


def test_local_text_records_cut_docstring_sentences_into_prompt_and_completion():
    from kd_train.pipelines.smollm2 import local_text_records

    records = local_text_records(50)
    assert len(records) == 50
    assert len({r.id for r in records}) == 50
    assert all(r.completion.startswith(" ") and r.prompt for r in records)
