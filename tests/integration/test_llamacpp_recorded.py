"""The loopback server's ``llama.cpp`` style answers like the real llama.cpp server.

``fixtures/llamacpp/answers.json`` holds the real server's answers (llama-cpp-python 0.3.36,
SmolLM2-135M-Instruct; rewrite it with ``python -m tests.integration.llamacpp record``). Each
recorded request is sent to the loopback server (a tiny random model, ``style="llama.cpp"``)
and both answers must have the same shape (keys, types, nesting) and the same quirks
(entries per token, the shifted echo, the refused token-id prompt), so the loopback server,
which the fault-injection tests use, cannot drift from the server users run.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from kd_train.testing import LoopbackTeacherServer

from tests.integration.llamacpp import ANSWERS

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("llamacpp-recorded")]

RECORDED = json.loads(ANSWERS.read_text("utf-8"))


def shape(value: Any) -> Any:
    """The JSON shape of ``value``: keys and types; a ``{token: logprob}`` map is one type."""
    if isinstance(value, dict):
        if value and all(isinstance(v, float | int) for v in value.values()):
            return "{token: number}"
        return {key: shape(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return ["list", sorted({json.dumps(shape(item), sort_keys=True) for item in value})]
    if isinstance(value, bool) or value is None:
        return repr(value) if value is None else "bool"
    return "number" if isinstance(value, int | float) else type(value).__name__


def quirks(request: dict[str, Any], status: int, answer: dict[str, Any]) -> dict[str, Any]:
    """The facts of an answer the HTTP teacher depends on."""
    if status != 200:
        message = answer["error"]["message"]
        return {"status": status, "errors": message.split(" ")[0], "head": message[:20][2:]}
    choice = answer["choices"][0]
    facts: dict[str, Any] = {"status": status, "object": answer["object"]}
    logprobs = choice["logprobs"]
    if "content" in logprobs:  # chat
        entries = logprobs["content"]
        facts["bytes"] = {e["bytes"] is None for e in entries}
        facts["k"] = {len(e["top_logprobs"]) for e in entries}
        facts["entries"] = len(entries) == answer["usage"]["completion_tokens"]
        return facts
    tops, tokens = logprobs["top_logprobs"], logprobs["tokens"]
    n_prompt = answer["usage"]["prompt_tokens"]
    facts["echo"] = bool(request.get("echo"))
    # echo: one entry per prompt token (none for the generated one), the first None
    expected = n_prompt if request.get("echo") else answer["usage"]["completion_tokens"]
    facts["entries"] = len(tokens) == len(tops) == expected
    facts["first"] = tops[0] is None
    shown = [(tok, top) for tok, top in zip(tokens, tops, strict=True) if top is not None]
    facts["own token in every entry"] = all(tok in top for tok, top in shown)
    facts["k or k + 1"] = all(len(top) in (request["logprobs"], request["logprobs"] + 1) or
                              "" in top for _, top in shown)  # fmt: skip
    return facts


@pytest.fixture(scope="module")
def loopback(tiny_teacher_dir):
    with LoopbackTeacherServer(tiny_teacher_dir, style="llama.cpp") as server:
        yield server


@pytest.mark.parametrize("recorded", RECORDED, ids=[r["name"] for r in RECORDED])
def test_loopback_answers_have_the_real_servers_shape(loopback, recorded):
    root = loopback.base_url.removesuffix("/v1")
    reply = httpx.post(root + recorded["path"], json=recorded["request"], timeout=60.0)
    assert reply.status_code == recorded["status"]
    assert shape(reply.json()) == shape(recorded["response"])
    assert quirks(recorded["request"], reply.status_code, reply.json()) == quirks(
        recorded["request"], recorded["status"], recorded["response"]
    )


def test_recorded_echo_is_shifted_by_one():
    # entry i of the real server's echo is the distribution *after* token i: after
    # " capital" it predicts " of", after " France" " is" (the standard would be before)
    echo = next(r for r in RECORDED if r["name"] == "echo")["response"]["choices"][0]
    tokens, tops = echo["logprobs"]["tokens"], echo["logprobs"]["top_logprobs"]
    best = [max(top, key=top.get) if top else None for top in tops]
    assert tokens == ["The", " capital", " of", " France", " is"]
    assert best == [None, " of", " the", " is", " Paris"]  # predicts tokens[i + 1], not tokens[i]


def test_recorded_partial_characters_come_back_as_empty_strings():
    answer = next(r for r in RECORDED if r["name"] == "partial_characters")["response"]
    logprobs = answer["choices"][0]["logprobs"]
    assert "" in logprobs["tokens"]
    # alternatives shown alike collapse into one key: fewer than the k asked for
    assert any(len(top) < 5 for top in logprobs["top_logprobs"])
