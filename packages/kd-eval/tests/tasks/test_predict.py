import pytest
import torch
from kd_eval.loading.models import load_model
from kd_eval.tasks.predict import classify_by_likelihood, generate_text, label_scores
from kd_train.data.schema import KDRecord
from kd_train.data.tokenization import TokenizeConfig, encode_record

LABELS = ["It is certain.", "Very doubtful.", "Yes."]


@pytest.fixture(scope="module")
def student(tiny_llama_dir):
    return load_model(tiny_llama_dir)


def _trainer_prompt_ids(tok, prompt):
    """The prompt part of what kd_train's encode_record feeds the model during training."""
    record = KDRecord(id="r", prompt=prompt, completion="x")
    example = encode_record(record, tok, TokenizeConfig(add_eos=False))
    head = int((example.labels == -100).sum())
    return example.input_ids[:head].tolist()


def _loglik(student, prompt, label):
    tok = student.tokenizer
    x = _trainer_prompt_ids(tok, prompt)
    y = tok(label, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = student.model(input_ids=torch.tensor([x + y])).logits[0].float()
    log_probs = logits.log_softmax(-1)
    return sum(float(log_probs[len(x) - 1 + j, t]) for j, t in enumerate(y))


def test_batched_label_scores_equal_one_sequence_at_a_time(student):
    prompt = "Will it rain? Answer:"
    scores = label_scores(student.model, student.tokenizer, prompt, LABELS)
    expected = [_loglik(student, prompt, label) for label in LABELS]
    assert scores == pytest.approx(expected, abs=1e-4)


def test_prompts_start_with_bos_like_the_trainers_layout(student):
    tok = student.tokenizer
    assert _trainer_prompt_ids(tok, "Q:")[0] == tok.bos_token_id


def test_labels_are_scored_with_the_completions_leading_space(student):
    prompt = "Will it rain? Answer:"
    spaced = label_scores(student.model, student.tokenizer, prompt, LABELS, prefix=" ")
    expected = [_loglik(student, prompt, " " + label) for label in LABELS]
    assert spaced == pytest.approx(expected, abs=1e-4)
    unspaced = label_scores(student.model, student.tokenizer, prompt, LABELS)
    assert spaced != pytest.approx(unspaced, abs=1e-4)


def test_length_normalisation_divides_by_the_label_token_count(student):
    prompt = "Q:"
    raw = label_scores(student.model, student.tokenizer, prompt, LABELS)
    norm = label_scores(student.model, student.tokenizer, prompt, LABELS, length_normalize=True)
    lengths = [len(student.tokenizer(x, add_special_tokens=False)["input_ids"]) for x in LABELS]
    assert norm == pytest.approx([r / n for r, n in zip(raw, lengths, strict=True)])


def test_the_predicted_label_has_the_highest_score(student):
    prompt = "Is it so?"
    scores = label_scores(student.model, student.tokenizer, prompt, LABELS)
    best = LABELS[scores.index(max(scores))]
    assert classify_by_likelihood(student.model, student.tokenizer, prompt, LABELS) == best


def test_generate_text_returns_only_the_new_greedy_text(student):
    tok = student.tokenizer
    text = generate_text(student.model, tok, "The quick", max_new_tokens=5)
    ids = torch.tensor([_trainer_prompt_ids(tok, "The quick")])
    out = student.model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=5,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
    )
    assert text == tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
