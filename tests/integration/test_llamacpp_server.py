"""The HTTP teacher against the real llama.cpp server (llama-cpp-python) serving SmolLM2.

What a real server answers is what these tests hold kd to: ``kd-train generate`` over both
APIs writes top-k records whose ids are the teacher tokenizer's (token text mapped back,
partial characters marked, chosen tokens joining into the completion), the HTTP teacher
scores prompts as the server itself predicts them (its probe finds text prompts and the
shifted echo), a request the server refuses as invalid is neither retried nor billed, and
generation stops at the budget, caches what it paid for and resumes to every prompt once.

The teacher tokenizer is read from the GGUF file (``transformers`` ``gguf_file=``) once per
session. Skipped only when ``llama_cpp.server`` or the GGUF package is not installed
(``nox -s ci`` installs both: the ``test`` dependency group).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import httpx
import pytest
import torch
from kd_train.store import open_store, sqlite_url
from kd_train.store.schema import charges, responses
from kd_train.teachers.http import HTTPTeacher, HTTPTeacherConfig, HTTPTeacherError
from kd_train.teachers.http.exchange import RequestRefusedError
from kd_train.teachers.http.scoring import EndpointShape
from kd_train.teachers.openai_api import PATHS, echo_request, generation_request, parse_generation
from kd_train.teachers.retry import RetryPolicy
from kd_train.teachers.tokens import TokenMap, map_alternatives
from kd_train.testing import generate_argv
from sqlalchemy import select

from tests.integration.llamacpp import MODEL, gguf_path, llamacpp_server, server_available

pytestmark = [
    pytest.mark.integration,
    # one worker starts the server and reads the GGUF tokenizer once for the whole module
    pytest.mark.xdist_group("llamacpp"),
    pytest.mark.skipif(server_available() is not None, reason=str(server_available())),
]

K = 3
# mid-sentence prompts: llama.cpp shows an end-of-text alternative as "" (it fits several
# ids), which marks a record; these keep it out of the top 3 for a few tokens
PROMPTS = ["The capital of France is", "One, two, three, four,", "The quick brown fox jumps"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with llamacpp_server(tmp_path_factory.mktemp("llamacpp") / "server.log") as base_url:
        yield base_url


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """The teacher's tokenizer, read from the GGUF file and saved as a directory."""
    from transformers import AutoTokenizer

    gguf = gguf_path()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    out = tmp_path_factory.mktemp("smollm2-tokenizer")
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


def teacher(server, tokenizer, store=None, **overrides):
    settings = {
        "base_url": server,
        "model": MODEL,
        "top_logprobs": K,
        "max_tokens": 8,
        "retry": RetryPolicy(max_attempts=3, base_delay=0.0),
        "timeout": 120.0,
        "concurrency": 1,
        "price_per_1k_prompt": 1.0,
        "price_per_1k_completion": 2.0,
    }
    settings.update(overrides)
    return HTTPTeacher(HTTPTeacherConfig(**settings), store=store, tokenizer=tokenizer)


def generate(server, tmp_path, tokenizer_dir, prompts=PROMPTS, flags=(), **options):
    """Run ``kd-train generate`` as a process; return it and the written records."""
    (tmp_path / "prompts.jsonl").write_text(
        "".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(prompts))
    )
    out = tmp_path / "run" / "out.jsonl"
    settings = {"model": MODEL, "max_tokens": 4, "top_logprobs": K, "concurrency": 1}
    argv = generate_argv(
        server, tmp_path / "prompts.jsonl", out, tokenizer=tokenizer_dir, **(settings | options)
    )
    command = [sys.executable, "-m", "kd_train.cli", *argv, *flags]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return proc, records


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_generate_writes_topk_records_in_the_teacher_tokenizers_ids(
    server, tmp_path, tokenizer_dir, tokenizer, api
):
    proc, records = generate(server, tmp_path, tokenizer_dir, api=api)
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["id"] for r in records) == ["p0", "p1", "p2"]
    tm = TokenMap.of(tokenizer)
    mapped = [r for r in records if "teacher_topk" in r]
    assert len(mapped) >= 2, [r["metadata"] for r in records]
    for record in mapped:
        ids, logprobs = record["teacher_topk"]["ids"], record["teacher_topk"]["logprobs"]
        chosen = record["metadata"]["teacher_chosen"]
        assert all(len(row) == K == len(set(row)) for row in ids)  # k never shrunk
        assert all(lp <= 0 for row in logprobs for lp in row)
        assert tm.joins(chosen, record["completion"])  # mapped tokens join into the text
        # greedy with every sampling parameter neutral: the chosen token is the top one
        assert [row[0] for row in ids] == chosen
        assert "teacher_chosen_not_top" not in record["metadata"]
    for record in (r for r in records if "teacher_topk" not in r):
        assert record["metadata"]["teacher_topk_unmapped"]["reason"]
    # what the teacher was conditioned on: the chat template adds a system prompt
    for record in records:
        raw = len(tokenizer(record["prompt"], add_special_tokens=False)["input_ids"])
        seen = record["metadata"]["teacher_prompt_tokens"]
        assert seen > raw + 20 if api == "chat" else seen == raw


def test_partial_characters_are_marked_not_shrunk(server, tmp_path):
    # the tokenizer given as the GGUF file the server serves
    proc, records = generate(
        server, tmp_path, gguf_path(), prompts=["Emoji of a cat: 🐱 and a dog:"], top_logprobs=5
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^top-k unmapped +1$", proc.stdout, re.MULTILINE)
    (record,) = records
    # the emoji comes back as tokens shown as "" (part of a character each), whose
    # alternatives merge into one key: marked, not stored with fewer than k
    assert "teacher_topk" not in record
    unmapped = record["metadata"]["teacher_topk_unmapped"]
    assert unmapped["positions"]
    assert "fewer than k=5" in unmapped["reason"] or "fits several" in unmapped["reason"]


def test_the_server_applies_its_own_sampling_unless_every_parameter_is_sent(server):
    prompt = "Write the word cat ten times: cat cat cat"
    off = {}
    for extensions in (False, True):
        body = generation_request("completions", MODEL, prompt, 16, 2, 0.0, extensions)
        if not extensions:  # only what an OpenAI client sends: the server's defaults apply
            body = {
                k: body[k] for k in ("model", "prompt", "max_tokens", "temperature", "logprobs")
            }
        answer = httpx.post(server + PATHS["completions"], json=body, timeout=120.0).json()
        gen = parse_generation("completions", answer)
        off[extensions] = sum(t != top[0][0] for t, top in zip(gen.tokens, gen.top, strict=True))
    assert off[False] > 0  # repeat_penalty 1.1 by default: not the top-ranked token
    assert off[True] == 0


def test_http_teacher_scores_prompts_as_the_server_predicts_them(server, tokenizer):
    texts = ["The capital of France is Paris, and the capital of Italy is Rome.", PROMPTS[1]]
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    length = max(map(len, rows))
    input_ids = torch.zeros((2, length), dtype=torch.int64)
    attention = torch.zeros((2, length), dtype=torch.int64)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
    tm = TokenMap.of(tokenizer)
    with teacher(server, tokenizer) as http:
        assert http.endpoint_shape(K) == EndpointShape(ids=False, alignment="shifted")
        out = http.topk(input_ids, attention, K)
        # the known answer at each position: the first generated token after the prefix
        same, diffs = 0, []
        for pos in range(1, len(rows[0])):
            if not out.mask[0, pos]:
                continue
            prefix = tokenizer.decode(rows[0][: pos + 1])
            body = generation_request("completions", MODEL, prefix, 1, K, 0.0)
            answer = http._request(PATHS["completions"], body, pos + 17, 1).body
            top = parse_generation("completions", answer).top[0]
            expected = map_alternatives(tm, [(t, lp, None) for t, lp in top], K)
            same += out.ids[0, pos].tolist() == expected.ids
            diffs.append((out.logprobs[0, pos] - torch.tensor(expected.logprobs)).abs().max())
    # llama.cpp scores a prefix alone and inside the whole row a little differently
    # (batched evaluation of a 4-bit model): near ties may swap, log-probs move by < 0.3
    assert len(diffs) >= 8
    assert same >= 0.8 * len(diffs)
    assert max(diffs) < 0.3
    assert not out.mask[:, 0].any()  # no distribution after x_0 on a shifted endpoint
    assert not (out.mask & ~attention.bool()).any()


def test_prompt_logprobs_scoring_is_refused_by_llamacpp(server, tokenizer):
    ids = torch.tensor([tokenizer("Name a fruit.")["input_ids"]])
    with (
        teacher(server, tokenizer, scoring="prompt_logprobs") as http,
        pytest.raises(HTTPTeacherError, match="refuses token-id prompts"),
    ):
        http.topk(ids, torch.ones_like(ids), K)


def test_a_refused_request_is_neither_retried_nor_billed(server, tokenizer, tmp_path):
    store = open_store(sqlite_url(tmp_path / "store.sqlite"))
    with (
        teacher(server, tokenizer, store, budget=1.0) as http,
        pytest.raises(RequestRefusedError, match="validation error"),
    ):
        http._request(PATHS["completions"], echo_request(MODEL, [504, 3575, 282], K), 3, 1)
    status = store.ledger.status("default")
    store.close()
    assert (http.counters.retries, http.counters.unconfirmed, http.counters.paid) == (0, 0, 0)
    assert (status.spent_nanos, status.reserved_nanos, status.unconfirmed_nanos) == (0, 0, 0)


@pytest.mark.slow
def test_generation_stops_at_the_budget_then_resumes_from_the_cache(
    server, tmp_path, tokenizer_dir
):
    prompts = [f"Name a color. ({i})" for i in range(4)]
    # each request reserves $0.037 (17 prompt bytes + 16, 4 completion tokens at $1/1k) and
    # costs about $0.011: the fourth does not fit under the cap
    first, records = generate(server, tmp_path, tokenizer_dir, prompts, budget=0.06)
    assert first.returncode != 0
    assert "stopped" in first.stderr
    assert 0 < len(records) < len(prompts)
    second, records = generate(
        server, tmp_path, tokenizer_dir, prompts, flags=["--change-budget"], budget=1.0
    )
    assert second.returncode == 0, second.stderr
    assert sorted(r["id"] for r in records) == [f"p{i}" for i in range(4)]
    store = open_store(sqlite_url(tmp_path / "run" / "kd-store.sqlite"))
    with store.engine.connect() as conn:
        charged = conn.execute(select(charges.c.response_key, charges.c.cost_nanos)).all()
        cached = conn.execute(select(responses.c.key, responses.c.cost_nanos)).all()
    status = store.ledger.status("default")
    store.close()
    assert len(charged) == len({k for k, _ in charged}) == len(prompts)  # each paid once
    assert status.spent_nanos == sum(c for _, c in charged) == sum(c for _, c in cached)
    third, again = generate(server, tmp_path, tokenizer_dir, prompts, budget=1.0)
    assert third.returncode == 0, third.stderr
    assert again == records


def test_empty_completions_are_quarantined_not_written(server, tmp_path, tokenizer_dir):
    # SmolLM2-Instruct asked without its chat template stops at once on some questions
    proc, records = generate(server, tmp_path, tokenizer_dir, ["What is 2+2?", "Who wrote Hamlet?"])
    assert proc.returncode == 0, proc.stderr
    assert [r["id"] for r in records] == ["p1"]
    assert records[0]["completion"].strip()
    quarantined = tmp_path / "run" / "out.jsonl.quarantine.jsonl"
    (row,) = [json.loads(line) for line in quarantined.read_text().splitlines()]
    assert row["id"] == "p0"
    assert "empty completion (0 tokens, finish_reason 'stop')" in row["reason"]
    assert re.search(r"^quarantined +1$", proc.stdout, re.MULTILINE)
