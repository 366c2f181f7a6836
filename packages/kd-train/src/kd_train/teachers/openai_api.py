"""Request bodies and response parsing for OpenAI-compatible completions and chat endpoints.

Three request shapes:

* ``completions`` (``POST /v1/completions``): ``prompt`` text, ``logprobs: k`` — the answer
  has ``choices[0].text`` and ``choices[0].logprobs.{tokens, top_logprobs}`` (one
  ``{token: logprob}`` object per generated token).
* ``chat`` (``POST /v1/chat/completions``): one user message, ``logprobs: true,
  top_logprobs: k`` — ``choices[0].message.content`` and ``choices[0].logprobs.content``
  (``[{token, logprob, top_logprobs: [{token, logprob}]}]``).
* ``echo`` (``completions`` with ``prompt`` a list of token ids, ``echo: true``,
  ``max_tokens: 1``): ``top_logprobs[i]`` is the distribution of prompt token ``i``
  given the tokens before it (``None`` for ``i = 0``) and the last entry is the
  distribution after the whole prompt; this is what :meth:`HTTPTeacher.topk
  <kd_train.teachers.http.HTTPTeacher.topk>` needs.

Token strings are mapped back to ids with the teacher's tokenizer (vocabulary strings,
e.g. ``"Ġthe"``), or read directly from vLLM's ``"token_id:123"`` form.

>>> from kd_train.teachers.openai_api import parse_generation
>>> body = {"choices": [{"text": "ok", "logprobs": {"tokens": ["ok"],
...         "top_logprobs": [{"ok": -0.1, "no": -2.5}]}}],
...         "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
>>> gen = parse_generation("completions", body)
>>> gen.text, gen.tokens, gen.top[0][0]
('ok', ['ok'], ('ok', -0.1))
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from kd_train.errors import KDTrainError

Api = Literal["completions", "chat"]

#: URL path (below the base URL) of each API.
PATHS: dict[str, str] = {"completions": "/completions", "chat": "/chat/completions"}

_TOKEN_ID = re.compile(r"^token_id:(\d+)$")


class MalformedResponseError(KDTrainError):
    """The endpoint answered 200 with a body that is not the expected JSON shape."""


@dataclass(frozen=True)
class Usage:
    """Token counts the endpoint reported (``usage.prompt_tokens`` / ``completion_tokens``)."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Generation:
    """A parsed answer: text, generated token strings, and per token its top ``(token, lp)``."""

    text: str
    tokens: list[str]
    top: list[list[tuple[str, float]]]
    usage: Usage | None


def generation_request(
    api: Api, model: str, prompt: str, max_tokens: int, top_logprobs: int, temperature: float
) -> dict[str, Any]:
    """Return the JSON body asking ``model`` to answer ``prompt`` with top-k log-probs.

    >>> from kd_train.teachers.openai_api import generation_request
    >>> generation_request("chat", "m", "hi", 8, 5, 0.0)["top_logprobs"]
    5
    """
    if api == "chat":
        return {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "logprobs": top_logprobs > 0,
            "top_logprobs": top_logprobs,
        }
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": temperature,
    }
    if top_logprobs > 0:
        body["logprobs"] = top_logprobs
    return body


def echo_request(model: str, ids: list[int], k: int) -> dict[str, Any]:
    """Return the completions body that scores token ids ``ids`` with top-``k`` log-probs."""
    return {
        "model": model,
        "prompt": ids,
        "echo": True,
        "logprobs": k,
        "max_tokens": 1,
        "temperature": 0.0,
    }


def parse_usage(body: dict[str, Any]) -> Usage | None:
    """Return the reported usage, or ``None`` when the endpoint gave none."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion)


def parse_generation(api: Api, body: Any) -> Generation:
    """Parse an answer of ``api`` (see the module docstring for the shapes).

    Raises:
        MalformedResponseError: a required field is missing or has the wrong type.
    """
    try:
        choice = body["choices"][0]
        if api == "chat":
            text = choice["message"]["content"] or ""
            entries = (choice.get("logprobs") or {}).get("content") or []
            tokens = [str(e["token"]) for e in entries]
            top = [
                _sorted([(str(a["token"]), float(a["logprob"])) for a in e["top_logprobs"]])
                for e in entries
            ]
        else:
            text = choice["text"]
            logprobs = choice.get("logprobs") or {}
            tokens = [str(t) for t in logprobs.get("tokens") or []]
            # echo answers have None for the first prompt token: no context, no distribution
            top = [_sorted(_pairs(d or {})) for d in logprobs.get("top_logprobs") or []]
        if not isinstance(text, str):
            raise TypeError("text is not a string")
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedResponseError(f"unexpected {api} response shape: {exc!r}") from exc
    return Generation(text, tokens, top, parse_usage(body))


def parse_echo(body: Any, n_prompt: int) -> list[list[tuple[str, float]]]:
    """Return, for each of the ``n_prompt`` positions, the top ``(token, lp)`` that follow it.

    Raises:
        MalformedResponseError: no ``top_logprobs`` or fewer entries than ``n_prompt + 1``.
    """
    try:
        top = body["choices"][0]["logprobs"]["top_logprobs"]
        if len(top) < n_prompt + 1:
            raise ValueError(f"{len(top)} top_logprobs entries for {n_prompt} prompt tokens + 1")
        return [_sorted(_pairs(top[i])) for i in range(1, n_prompt + 1)]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedResponseError(
            f"echo response without per-token top_logprobs ({exc!r}); the endpoint must "
            "support completions with a token-id prompt, echo=true and logprobs"
        ) from exc


def token_to_id(token: str, vocab: dict[str, int]) -> int:
    """Map a returned token string to its id: ``"token_id:N"`` or a vocabulary lookup.

    >>> from kd_train.teachers.openai_api import token_to_id
    >>> token_to_id("token_id:42", {}), token_to_id("Ġthe", {"Ġthe": 7})
    (42, 7)
    """
    match = _TOKEN_ID.match(token)
    if match:
        return int(match.group(1))
    try:
        return vocab[token]
    except KeyError:
        raise KDTrainError(
            f"the endpoint returned token {token!r}, which is not in the tokenizer's "
            "vocabulary; give the teacher's own tokenizer, or ask a vLLM endpoint for "
            "'token_id:N' tokens (return_tokens_as_token_ids)"
        ) from None


def _pairs(entry: Any) -> list[tuple[str, float]]:
    return [(str(t), float(lp)) for t, lp in dict(entry).items()]


def _sorted(pairs: list[tuple[str, float]]) -> list[tuple[str, float]]:
    return sorted(pairs, key=lambda p: -p[1])
