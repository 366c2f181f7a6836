"""Prompt scoring against servers of another shape: the probe, text prompts, refusals.

The loopback server in its ``llama.cpp`` style answers like llama-cpp-python's server
(checked against recorded answers in tests/integration/test_llamacpp_recorded.py): it
refuses token-id prompts with an HTTP 500 validation error, names tokens by their text, and
shifts echoed scores by one. The real server is exercised in
tests/integration/test_llamacpp_server.py.
"""

import httpx
import pytest
import torch
from kd_train.store import open_store, sqlite_url
from kd_train.teachers.hf import HFTeacher
from kd_train.teachers.http import HTTPTeacher, HTTPTeacherConfig, HTTPTeacherError
from kd_train.teachers.http.exchange import RequestRefusedError
from kd_train.teachers.http.scoring import EndpointShape
from kd_train.teachers.openai_api import PATHS, echo_request, generation_request
from kd_train.teachers.retry import RetryPolicy
from kd_train.testing import LoopbackTeacherServer
from transformers import AutoTokenizer

K = 3


@pytest.fixture(scope="module")
def llamacpp(tiny_teacher_dir):
    with LoopbackTeacherServer(tiny_teacher_dir, style="llama.cpp") as running:
        yield running


@pytest.fixture(scope="module")
def tokenizer(tiny_teacher_dir):
    return AutoTokenizer.from_pretrained(tiny_teacher_dir)


def make_teacher(base_url, tokenizer, store=None, transport=None, **overrides):
    settings = {
        "base_url": base_url,
        "model": "tiny",
        "top_logprobs": K,
        "retry": RetryPolicy(max_attempts=3, base_delay=0.0),
        "timeout": 10.0,
        "price_per_1k_prompt": 1.0,
        "price_per_1k_completion": 2.0,
    }
    settings.update(overrides)
    return HTTPTeacher(
        HTTPTeacherConfig(**settings), store=store, tokenizer=tokenizer, transport=transport
    )


def test_probe_finds_text_prompts_and_the_shifted_alignment(llamacpp, tokenizer):
    refused = llamacpp.counts["refused"]
    with make_teacher(llamacpp.base_url, tokenizer) as teacher:
        assert teacher.endpoint_shape() == EndpointShape(ids=False, alignment="shifted")
        assert teacher.endpoint_shape() == EndpointShape(ids=False, alignment="shifted")
    assert llamacpp.counts["refused"] - refused == 1  # the ids probe, once
    assert teacher.counters.retries == 0


def test_probe_finds_ids_and_the_standard_alignment_on_an_openai_server(
    tiny_teacher_dir, tokenizer
):
    with (
        LoopbackTeacherServer(tiny_teacher_dir) as server,
        make_teacher(server.base_url, tokenizer) as teacher,
    ):
        assert teacher.endpoint_shape() == EndpointShape(ids=True, alignment="standard")


def test_shifted_text_scores_agree_with_a_local_teacher(llamacpp, tokenizer, tiny_teacher_dir):
    texts = ["The quick brown fox jumps", "Ask again later"]
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    length = max(map(len, rows))
    input_ids = torch.full((2, length), 3, dtype=torch.int64)
    attention = torch.zeros(2, length, dtype=torch.int64)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
    with make_teacher(llamacpp.base_url, tokenizer) as teacher:
        out = teacher.topk(input_ids, attention, K)
    logits = HFTeacher.from_pretrained(tiny_teacher_dir).model(input_ids).logits
    local = torch.log_softmax(logits.float(), dim=-1).topk(K)
    assert out.ids is not None
    assert out.logprobs is not None
    # the distribution after x_0 is missing on a shifted endpoint: masked, counted
    assert not out.mask[:, 0].any()
    assert teacher.counters.unscored >= 2
    scored = out.mask & attention.bool()
    assert int(scored.sum()) >= 4
    assert torch.equal(out.ids[scored], local.indices[scored])
    assert torch.allclose(out.logprobs[scored], local.values[scored], atol=1e-4)
    assert not (out.mask & ~attention.bool()).any()


def test_validation_error_in_a_500_is_a_refusal_neither_retried_nor_billed(
    llamacpp, tokenizer, tmp_path
):
    store = open_store(sqlite_url(tmp_path / "store.sqlite"))
    billed = len(llamacpp.billed)
    with (
        make_teacher(llamacpp.base_url, tokenizer, store, budget=1.0) as teacher,
        pytest.raises(RequestRefusedError, match=r"HTTP 500: the endpoint refused .* validation"),
    ):
        teacher._request(PATHS["completions"], echo_request("tiny", [5, 6, 7], K), 3, 1)
    status = store.ledger.status("default")
    assert (teacher.counters.retries, teacher.counters.unconfirmed) == (0, 0)
    assert (status.spent_nanos, status.reserved_nanos) == (0, 0)
    assert len(llamacpp.billed) == billed
    store.close()


def test_prompt_logprobs_scoring_is_refused_by_a_server_without_token_id_prompts(
    llamacpp, tokenizer
):
    ids = torch.tensor([tokenizer("Ask again")["input_ids"]])
    with (
        make_teacher(llamacpp.base_url, tokenizer, scoring="prompt_logprobs") as teacher,
        pytest.raises(HTTPTeacherError, match="refuses token-id prompts"),
    ):
        teacher.topk(ids, torch.ones_like(ids), K)


def test_an_endpoint_whose_alignment_cannot_be_established_is_refused(llamacpp, tokenizer):
    def scrambled(request: httpx.Request) -> httpx.Response:
        import json

        body = json.loads(request.content)
        if isinstance(body["prompt"], list):
            return httpx.Response(400, json={"error": {"message": "1 validation error"}})
        answer = llamacpp.answer(request.url.path, body)
        if body.get("echo"):  # scores of some other positions: fits neither alignment
            answer["choices"][0]["logprobs"]["top_logprobs"].reverse()
        return httpx.Response(200, json=answer)

    ids = torch.tensor([tokenizer("Ask again")["input_ids"]])
    with (
        make_teacher(llamacpp.base_url, tokenizer, transport=httpx.MockTransport(scrambled)) as t,
        pytest.raises(HTTPTeacherError, match="cannot establish how it aligns prompt scores"),
    ):
        t.topk(ids, torch.ones_like(ids), K)


def test_max_tokens_zero_is_never_sent(llamacpp):
    # llama.cpp reads 0 as "no limit": a request for nothing generates until it stops
    answer = llamacpp.answer(PATHS["completions"], {"prompt": "Ask", "max_tokens": 0})
    assert len(answer["choices"][0]["text"]) > 0
    with pytest.raises(ValueError, match=r"0 means 'no limit' to llama\.cpp"):
        generation_request("completions", "m", "Ask", 0, 1, 0.0)
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        HTTPTeacherConfig("http://h/v1", "m", max_tokens=0)
    assert echo_request("m", "Ask", 2)["max_tokens"] == 1


def test_every_sampling_parameter_is_sent_explicitly():
    body = generation_request("completions", "m", "Ask", 4, 2, 0.0)
    assert body["repeat_penalty"] == 1.0
    assert (body["top_p"], body["top_k"], body["min_p"]) == (1.0, 0, 0.0)
    assert (body["frequency_penalty"], body["presence_penalty"]) == (0.0, 0.0)
    openai = generation_request("chat", "m", "Ask", 4, 2, 0.0, extensions=False)
    assert "repeat_penalty" not in openai
    assert openai["top_p"] == 1.0
