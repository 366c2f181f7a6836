import pytest
import torch
from kd_eval.loading.models import load_model
from kd_eval.tasks.predict import classify_by_likelihood, generate_text, label_scores

LABELS = ["It is certain.", "Very doubtful.", "Yes."]


@pytest.fixture(scope="module")
def student(tiny_llama_dir):
    return load_model(tiny_llama_dir)


def _loglik(student, prompt, label):
    tok = student.tokenizer
    x = tok(prompt)["input_ids"]
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
    ids = torch.tensor([tok("The quick")["input_ids"]])
    out = student.model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=5,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
    )
    assert text == tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
