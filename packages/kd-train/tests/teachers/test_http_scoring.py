"""HTTPTeacher as a training teacher: scoring prompts over HTTP, both request forms.

The loopback server runs a real tiny model, so the HTTP teacher's top-k can be compared
with a local HFTeacher on the same weights.
"""

import math

import pytest
import torch
from kd_train.data.batching import Batch
from kd_train.store import BudgetExhaustedError, open_store, sqlite_url
from kd_train.teachers.base import Teacher, TeacherOutput
from kd_train.teachers.hf import HFTeacher
from kd_train.teachers.http import HTTPTeacher, HTTPTeacherConfig, HTTPTeacherError
from kd_train.teachers.retry import RetryPolicy
from kd_train.testing import LoopbackTeacherServer, save_tiny_llama
from transformers import AutoTokenizer

FORMS = ["echo", "prompt_logprobs"]
K = 3
PAD = 3


@pytest.fixture(scope="module")
def server(tiny_teacher_dir):
    with LoopbackTeacherServer(tiny_teacher_dir) as running:
        yield running


@pytest.fixture(scope="module")
def tokenizer(tiny_teacher_dir):
    return AutoTokenizer.from_pretrained(tiny_teacher_dir)


@pytest.fixture(scope="module")
def other_dir(tmp_path_factory):
    """The teacher's architecture and seed, with a tokenizer trained on other text."""
    corpus = ["Completely different words: zebra yak quartz vixen whale."]
    return save_tiny_llama(
        tmp_path_factory.mktemp("other-tokenizer"),
        seed=1,
        hidden_size=64,
        num_layers=3,
        corpus=corpus,
    )


def make_teacher(base_url, tokenizer, scoring, store=None, **overrides):
    settings = {
        "base_url": base_url,
        "model": "tiny",
        "top_logprobs": K,
        "scoring": scoring,
        "retry": RetryPolicy(max_attempts=2, base_delay=0.0),
        "timeout": 10.0,
        "price_per_1k_prompt": 1.0,
        "price_per_1k_completion": 2.0,
    }
    settings.update(overrides)
    return HTTPTeacher(HTTPTeacherConfig(**settings), store=store, tokenizer=tokenizer)


def make_batch(tokenizer, texts):
    rows = [tokenizer(t)["input_ids"] for t in texts]
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), PAD, dtype=torch.int64)
    attention_mask = torch.zeros(len(rows), length, dtype=torch.int64)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
    labels = torch.full_like(input_ids, -100)
    return Batch([f"r{i}" for i in range(len(rows))], input_ids, attention_mask, labels, {})


def dense_logprobs(out: TeacherOutput) -> torch.Tensor:
    logits = out.logits
    if logits is None:  # hidden + lm_head form
        assert out.hidden is not None
        assert out.head_weight is not None
        logits = out.hidden @ out.head_weight.T
        if out.head_bias is not None:
            logits = logits + out.head_bias
    return torch.log_softmax(logits.float(), dim=-1)


@pytest.mark.parametrize("scoring", FORMS)
def test_scores_agree_with_a_local_hf_teacher_on_the_same_model(
    server, tokenizer, tiny_teacher_dir, scoring
):
    batch = make_batch(tokenizer, ["The quick brown fox jumps", "Ask again"])
    with make_teacher(server.base_url, tokenizer, scoring) as teacher:
        assert isinstance(teacher, Teacher)
        out = teacher(batch)
    local = dense_logprobs(HFTeacher.from_pretrained(tiny_teacher_dir)(batch)).topk(K)
    mask = batch.attention_mask.bool()
    assert out.is_topk
    assert out.ids is not None
    assert out.logprobs is not None
    assert (out.ids.shape, out.ids.dtype, out.logprobs.dtype) == (
        (2, batch.input_ids.shape[1], K),
        torch.int64,
        torch.float32,
    )
    assert (out.aligned, out.tail) == ("logits", None)
    assert torch.equal(out.mask, mask)
    assert torch.equal(out.ids[mask], local.indices[mask])
    assert torch.allclose(out.logprobs[mask], local.values[mask], atol=1e-4)


@pytest.mark.parametrize("scoring", FORMS)
def test_masked_positions_hold_distinct_placeholder_ids(server, tokenizer, scoring):
    batch = make_batch(tokenizer, ["The quick brown fox", "Ask"])
    with make_teacher(server.base_url, tokenizer, scoring) as teacher:
        out = teacher(batch)
    assert out.ids is not None
    assert out.logprobs is not None
    padded = ~batch.attention_mask.bool()
    assert padded.any()
    assert torch.equal(out.ids[padded], torch.arange(K).expand(int(padded.sum()), K))
    assert torch.allclose(out.logprobs[padded], torch.tensor(math.log(1 / (K + 1))))


@pytest.mark.parametrize("scoring", FORMS)
def test_endpoint_with_another_tokenizer_is_refused_by_the_probe(other_dir, tokenizer, scoring):
    # The first call probes the endpoint with a known text: the endpoint reads it as
    # other tokens (text prompt), or refuses the student's ids (outside its vocabulary).
    input_ids = torch.tensor([[72, 224, 84, 88]])
    with (
        LoopbackTeacherServer(other_dir) as foreign,
        make_teacher(foreign.base_url, tokenizer, scoring) as teacher,
        pytest.raises(HTTPTeacherError) as err,
    ):
        teacher.topk(input_ids, torch.ones_like(input_ids), K)
    message = str(err.value)
    if scoring == "echo":
        assert "reads the probe 'Paris is the capital" in message
        assert "cross-tokenizer distillation is not supported" in message
    else:
        assert "refuses token-id prompts" in message
    assert foreign.counts["500"] == 0


def test_zero_top_logprobs_is_refused_naming_the_config_key(server, tokenizer):
    batch = make_batch(tokenizer, ["Ask again"])
    with (
        make_teacher(server.base_url, tokenizer, "echo", top_logprobs=0) as teacher,
        pytest.raises(HTTPTeacherError, match=r"teacher\.topk in a run config\), and it is 0"),
    ):
        teacher(batch)


@pytest.mark.parametrize("scoring", FORMS)
def test_scoring_requests_are_charged_and_cached_like_generation(
    server, tokenizer, tmp_path, scoring
):
    store = open_store(sqlite_url(tmp_path / "store.sqlite"))
    batch = make_batch(tokenizer, ["The quick brown fox", "Ask again later"])
    before = server.counts["ok"]
    with make_teacher(server.base_url, tokenizer, scoring, store, budget=1.0) as teacher:
        first = teacher(batch)
        spent = store.ledger.status("default").spent_nanos
        again = teacher(batch)
    # the probe (a generation and a scoring request), then one request per row; the
    # second pass is answered from the cache
    assert server.counts["ok"] - before == 4
    assert (teacher.counters.paid, teacher.counters.cache_hits) == (4, 2)
    assert spent > 0
    assert store.ledger.status("default").spent_nanos == spent
    assert torch.equal(first.ids, again.ids)
    store.close()


@pytest.mark.parametrize("scoring", FORMS)
def test_scoring_that_could_exceed_the_budget_is_never_sent(server, tokenizer, tmp_path, scoring):
    store = open_store(sqlite_url(tmp_path / "store.sqlite"))
    batch = make_batch(tokenizer, ["The quick brown fox"])
    before = sum(server.counts.values())
    with (
        make_teacher(server.base_url, tokenizer, scoring, store, budget=1e-9) as teacher,
        pytest.raises(BudgetExhaustedError, match="exhausted"),
    ):
        teacher(batch)
    assert sum(server.counts.values()) == before
    store.close()
