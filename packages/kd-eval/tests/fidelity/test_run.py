import math

import pytest
import torch
from kd_eval.errors import EvalDataError
from kd_eval.fidelity.run import encode_example, evaluate_fidelity
from kd_eval.loading.models import load_model
from kd_train.data.schema import KDRecord

RECORDS = [
    KDRecord(id="a", prompt="The quick brown", completion=" fox jumps."),
    KDRecord(id="b", prompt="Call the tool", completion=" get_weather"),
    KDRecord(id="c", prompt="It is", completion=" certain."),
]


@pytest.fixture(scope="module")
def models(tiny_teacher_dir, tiny_llama_dir):
    return load_model(tiny_teacher_dir), load_model(tiny_llama_dir)


def test_a_student_identical_to_its_teacher_has_zero_kl_and_full_agreement(models):
    _, student = models
    result = evaluate_fidelity(student, student, RECORDS, resamples=100)
    assert result.aggregate["forward_kl"].value == pytest.approx(0.0, abs=1e-9)
    assert result.aggregate["top1_agreement"].value == 1.0
    assert result.aggregate["topk_overlap"].value == 1.0


def test_student_perplexity_is_exp_of_the_token_weighted_nll(models):
    teacher, student = models
    result = evaluate_fidelity(teacher, student, RECORDS, resamples=100)
    total_nll, total_tokens = 0.0, 0
    for record in RECORDS:
        ids, n_prompt = encode_example(student.tokenizer, record)
        with torch.no_grad():
            logits = student.model(input_ids=torch.tensor([ids])).logits[0].double()
        log_probs = logits.log_softmax(-1)[n_prompt - 1 : -1]
        targets = torch.tensor(ids[n_prompt:])
        total_nll -= float(log_probs.gather(-1, targets[:, None]).sum())
        total_tokens += len(targets)
    expected = math.exp(total_nll / total_tokens)
    assert result.aggregate["student_perplexity"].value == pytest.approx(expected, rel=1e-5)


def test_every_example_gets_a_row_and_the_interval_holds_the_estimate(models):
    teacher, student = models
    result = evaluate_fidelity(teacher, student, RECORDS, resamples=200)
    data = result.to_dict()
    assert [row["id"] for row in data["examples"]] == ["a", "b", "c"]
    assert data["n_tokens"] == sum(row["n_tokens"] for row in data["examples"])
    kl = result.aggregate["forward_kl"]
    assert kl.value > 0
    assert kl.low <= kl.value <= kl.high


def test_a_teacher_with_another_tokenizer_gets_text_level_figures_only(
    small_vocab_model_dir, models
):
    _, student = models
    teacher = load_model(small_vocab_model_dir)
    result = evaluate_fidelity(teacher, student, RECORDS, resamples=100)
    assert result.tokenizers == "different"
    assert set(result.aggregate) == {
        "teacher_bits_per_byte",
        "student_bits_per_byte",
        "text_top1_agreement",
    }
    # Bits per byte from each model's own tokens: the total code length over the bytes.
    total_bits = total_bytes = 0.0
    for record in RECORDS:
        ids, n_prompt = encode_example(teacher.tokenizer, record)
        with torch.no_grad():
            logits = teacher.model(input_ids=torch.tensor([ids])).logits[0].double()
        log_probs = logits.log_softmax(-1)[n_prompt - 1 : -1]
        targets = torch.tensor(ids[n_prompt:])
        total_bits -= float(log_probs.gather(-1, targets[:, None]).sum()) / math.log(2)
        total_bytes += len(record.completion.encode())
    assert result.aggregate["teacher_bits_per_byte"].value == pytest.approx(
        total_bits / total_bytes, rel=1e-6
    )
    assert "forward_kl" not in result.examples[0]
    assert 0.0 <= result.aggregate["text_top1_agreement"].value <= 1.0


def test_with_one_tokenizer_text_level_agreement_is_token_agreement(models):
    teacher, student = models
    result = evaluate_fidelity(teacher, student, RECORDS, resamples=100)
    assert result.tokenizers == "same"
    for row in result.examples:
        assert row["text_spans"] == row["n_tokens"]
        assert row["text_top1_agreement"] == pytest.approx(row["top1_agreement"])
    # The same model has the same bits per byte whichever side it sits on.
    mirrored = evaluate_fidelity(student, teacher, RECORDS, resamples=100)
    assert mirrored.aggregate["student_bits_per_byte"].value == pytest.approx(
        result.aggregate["teacher_bits_per_byte"].value
    )


def test_empty_eval_set_is_refused(models):
    with pytest.raises(EvalDataError, match="empty"):
        evaluate_fidelity(*models, [])


def test_record_without_completion_tokens_is_named(models):
    with pytest.raises(EvalDataError, match="'z'"):
        evaluate_fidelity(*models, [KDRecord(id="z", prompt="p", completion="")])
