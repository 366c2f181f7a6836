r"""Request bodies and response parsing for OpenAI-compatible completions and chat endpoints.

Two generation shapes:

* ``completions`` (``POST /v1/completions``): ``prompt`` text, ``logprobs: k`` — the answer
  has ``choices[0].text`` and ``choices[0].logprobs.{tokens, top_logprobs}`` (one
  ``{token: logprob}`` object per generated token).
* ``chat`` (``POST /v1/chat/completions``): one user message, ``logprobs: true,
  top_logprobs: k`` — ``choices[0].message.content`` and ``choices[0].logprobs.content``
  (``[{token, logprob, top_logprobs: [{token, logprob}]}]``).

Two prompt-scoring shapes (:class:`~kd_train.teachers.http.HTTPTeacher` ``scoring``), both a
``completions`` request whose ``prompt`` is the list of token ids ``x_0 .. x_{n-1}``, with
``max_tokens: 1``. Either gives, for every prompt position ``i``, the top-``k`` of
:math:`p(\cdot \mid x_{\le i})`: the distribution of the token *after* ``x_i``.

* ``echo`` (:func:`echo_request`, :func:`parse_echo`; OpenAI's legacy form): ``echo: true,
  logprobs: k``. ``logprobs.top_logprobs[i]`` is :math:`p(\cdot \mid x_{<i})` (``None`` for
  ``i = 0``), and entry ``n``, the one generated token's, is the distribution after the
  whole prompt; ``logprobs.tokens[:n]`` are the prompt tokens as the endpoint read them.
* ``prompt_logprobs`` (:func:`prompt_logprobs_request`, :func:`parse_prompt_logprobs`;
  vLLM's extension): ``prompt_logprobs: k, logprobs: k, return_tokens_as_token_ids: true``.
  ``choices[0].prompt_logprobs[i]`` is ``None`` for ``i = 0``, else
  :math:`p(\cdot \mid x_{<i})` as ``{"<token id>": {"logprob", "rank", "decoded_token"}}``;
  it always holds ``x_i`` itself, so it has ``k`` items, or ``k + 1`` when ``x_i`` is outside
  the top-``k`` (the ``k`` best are kept). The distribution after the last prompt token is
  not in it: it is the generated token's ``logprobs.top_logprobs[0]``.

**Token check.** Scoring is only meaningful when the endpoint's tokenizer is the student's:
the same id must be the same token. Each parser also returns how the endpoint names every
prompt token (:attr:`PromptScores.returned`): the echoed ``tokens[i]``, or the
``decoded_token`` of ``x_i`` in ``prompt_logprobs[i]``; :func:`first_mismatch` compares it
with the local tokenizer's view of the id sent.

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
from dataclasses import dataclass, field
from typing import Any, Literal

from kd_train.errors import KDTrainError

Api = Literal["completions", "chat"]
Scoring = Literal["echo", "prompt_logprobs"]

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
    """A parsed answer: text, generated token strings, and per token its top ``(token, lp)``.

    Attributes:
        text: the completion (``text``, or the chat message's ``content``).
        tokens: the chosen (generated) token of every position, as the endpoint names it.
        top: per position, the alternatives ``(token, lp)``, most likely first.
        usage: the reported token counts.
        token_bytes: per position, the chosen token's ``bytes`` (``None`` where not given).
        top_bytes: per position and alternative, its ``bytes`` (``None`` where not given).
    """

    text: str
    tokens: list[str]
    top: list[list[tuple[str, float]]]
    usage: Usage | None
    token_bytes: list[list[int] | None] = field(default_factory=list)
    top_bytes: list[list[list[int] | None]] = field(default_factory=list)


@dataclass(frozen=True)
class PromptScores:
    """A scored prompt of ``n`` tokens ``x_0 .. x_{n-1}`` (see the module docstring).

    Attributes:
        top: per position ``i``, the alternatives ``(token, lp)`` for the token after
            ``x_i``, most likely first; ``token`` is a vocabulary string or ``"token_id:N"``.
        returned: per position ``i``, how the endpoint names ``x_i``; ``None`` where it
            says nothing (``x_0`` of ``prompt_logprobs``).
    """

    top: list[list[tuple[str, float]]]
    returned: list[str | None]


#: The sampling extensions of llama.cpp and vLLM at values that change nothing (llama.cpp
#: applies ``repeat_penalty`` 1.1, ``top_k`` 40 and ``min_p`` 0.05 unless told otherwise).
NEUTRAL_EXTENSIONS: dict[str, Any] = {
    "repeat_penalty": 1.0,
    "repetition_penalty": 1.0,
    "top_k": 0,
    "min_p": 0.0,
    "typical_p": 1.0,
    "tfs_z": 1.0,
    "mirostat_mode": 0,
}


def sampling_params(temperature: float, extensions: bool = True) -> dict[str, Any]:
    """Every sampling parameter that matters, sent explicitly (never a server's default).

    The OpenAI ones always (``temperature``, ``top_p`` 1, both penalties 0, ``n`` 1);
    with ``extensions``, :data:`NEUTRAL_EXTENSIONS` too (the OpenAI API refuses them).

    >>> from kd_train.teachers.openai_api import sampling_params
    >>> sampling_params(0.0)["repeat_penalty"], "top_k" in sampling_params(0.0, False)
    (1.0, False)
    """
    params: dict[str, Any] = {
        "temperature": temperature,
        "top_p": 1.0,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
        "n": 1,
    }
    if extensions:
        params.update(NEUTRAL_EXTENSIONS)
    return params


def generation_request(
    api: Api,
    model: str,
    prompt: str,
    max_tokens: int,
    top_logprobs: int,
    temperature: float,
    extensions: bool = True,
) -> dict[str, Any]:
    """Return the JSON body asking ``model`` to answer ``prompt`` with top-k log-probs.

    Every sampling parameter is explicit (:func:`sampling_params`); ``max_tokens`` must be
    at least 1, since llama.cpp reads 0 as "no limit".

    >>> from kd_train.teachers.openai_api import generation_request
    >>> body = generation_request("chat", "m", "hi", 8, 5, 0.0)
    >>> body["top_logprobs"], body["repeat_penalty"], body["max_tokens"]
    (5, 1.0, 8)

    Raises:
        ValueError: ``max_tokens`` is below 1.
    """
    if max_tokens < 1:
        raise ValueError(
            f"max_tokens must be >= 1 (0 means 'no limit' to llama.cpp), got {max_tokens}"
        )
    sampling = sampling_params(temperature, extensions)
    if api == "chat":
        return {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            **sampling,
            "logprobs": top_logprobs > 0,
            "top_logprobs": top_logprobs,
        }
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        **sampling,
    }
    if top_logprobs > 0:
        body["logprobs"] = top_logprobs
    return body


def echo_request(model: str, ids: list[int] | str, k: int) -> dict[str, Any]:
    """Return the ``echo`` body that scores a prompt (token ids, or text) with top-``k``.

    ``max_tokens`` is 1, never 0 (llama.cpp reads 0 as "no limit").
    """
    return {
        "model": model,
        "prompt": ids,
        "echo": True,
        "logprobs": k,
        "max_tokens": 1,
        **sampling_params(0.0, extensions=False),
    }


def prompt_logprobs_request(model: str, ids: list[int] | str, k: int) -> dict[str, Any]:
    """Return vLLM's ``prompt_logprobs`` body that scores ``ids`` with top-``k`` log-probs.

    ``logprobs: k`` adds the distribution after the last prompt token (the generated
    token's); ``return_tokens_as_token_ids`` names its alternatives ``"token_id:N"``.

    >>> from kd_train.teachers.openai_api import prompt_logprobs_request
    >>> body = prompt_logprobs_request("m", [1, 5], 3)
    >>> body["prompt_logprobs"], body["logprobs"], body["max_tokens"]
    (3, 3, 1)
    """
    return {
        "model": model,
        "prompt": ids,
        "prompt_logprobs": k,
        "logprobs": k,
        "max_tokens": 1,
        **sampling_params(0.0, extensions=False),
        "return_tokens_as_token_ids": True,
    }


def scoring_request(scoring: Scoring, model: str, ids: list[int] | str, k: int) -> dict[str, Any]:
    """Return the body of the ``scoring`` form for ``ids`` (:func:`echo_request` or vLLM's)."""
    if scoring == "prompt_logprobs":
        return prompt_logprobs_request(model, ids, k)
    return echo_request(model, ids, k)


def parse_scores(scoring: Scoring, body: Any, ids: list[int]) -> PromptScores:
    """Parse the answer of the ``scoring`` form for prompt ``ids``."""
    if scoring == "prompt_logprobs":
        return parse_prompt_logprobs(body, ids)
    return parse_echo(body, len(ids))


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
        token_bytes: list[list[int] | None] = []
        top_bytes: list[list[list[int] | None]] = []
        if api == "chat":
            text = choice["message"]["content"] or ""
            entries = (choice.get("logprobs") or {}).get("content") or []
            tokens = [str(e["token"]) for e in entries]
            token_bytes = [_raw(e.get("bytes")) for e in entries]
            top = []
            for e in entries:
                alts = sorted(
                    (
                        (str(a["token"]), float(a["logprob"]), _raw(a.get("bytes")))
                        for a in e["top_logprobs"]
                    ),
                    key=lambda a: -a[1],
                )
                top.append([(t, lp) for t, lp, _ in alts])
                top_bytes.append([raw for _, _, raw in alts])
        else:
            text = choice["text"]
            logprobs = choice.get("logprobs") or {}
            tokens = [str(t) for t in logprobs.get("tokens") or []]
            # echo answers have None for the first prompt token: no context, no distribution
            top = [_sorted(_pairs(d or {})) for d in logprobs.get("top_logprobs") or []]
            token_bytes = [None] * len(tokens)
            top_bytes = [[None] * len(t) for t in top]
        if not isinstance(text, str):
            raise TypeError("text is not a string")
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedResponseError(f"unexpected {api} response shape: {exc!r}") from exc
    return Generation(text, tokens, top, parse_usage(body), token_bytes, top_bytes)


def parse_echo(body: Any, n_prompt: int) -> PromptScores:
    """Parse an ``echo`` answer for a prompt of ``n_prompt`` tokens.

    ``top[i]`` is ``top_logprobs[i + 1]`` (the entry after prompt token ``i``; the last one
    is the generated token's) and ``returned[i]`` the echoed ``tokens[i]``.

    >>> from kd_train.teachers.openai_api import parse_echo
    >>> body = {"choices": [{"logprobs": {"tokens": ["a", "b", "c"],
    ...         "top_logprobs": [None, {"x": -2.0, "b": -0.5}, {"c": -0.1}]}}]}
    >>> scores = parse_echo(body, n_prompt=2)
    >>> scores.top, scores.returned
    ([[('b', -0.5), ('x', -2.0)], [('c', -0.1)]], ['a', 'b'])

    Raises:
        MalformedResponseError: no ``top_logprobs`` or ``tokens``, or fewer entries than
            ``n_prompt + 1`` and ``n_prompt``.
    """
    try:
        logprobs = body["choices"][0]["logprobs"]
        top, tokens = logprobs["top_logprobs"], logprobs["tokens"]
        if len(top) < n_prompt + 1 or len(tokens) < n_prompt:
            raise ValueError(
                f"{len(top)} top_logprobs and {len(tokens)} tokens for {n_prompt} prompt tokens + 1"
            )
        return PromptScores(
            top=[_sorted(_pairs(top[i])) for i in range(1, n_prompt + 1)],
            returned=[str(t) for t in tokens[:n_prompt]],
        )
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedResponseError(
            f"echo response without per-token top_logprobs ({exc!r}); the endpoint must "
            "support completions with a token-id prompt, echo=true and logprobs"
        ) from exc


def parse_prompt_logprobs(body: Any, ids: list[int]) -> PromptScores:
    """Parse a vLLM ``prompt_logprobs`` answer for the prompt ``ids``.

    ``top[i]`` is ``prompt_logprobs[i + 1]`` with keys written ``"token_id:N"`` (for the last
    position: the generated token's ``logprobs.top_logprobs[0]``); ``returned[i]`` is the
    ``decoded_token`` of ``ids[i]`` in ``prompt_logprobs[i]`` (``"token_id:N"`` when it has
    none, ``"<no entry for id N>"`` when the entry does not hold ``ids[i]``).

    >>> from kd_train.teachers.openai_api import parse_prompt_logprobs
    >>> body = {"choices": [{"prompt_logprobs": [None, {"7": {"logprob": -0.2,
    ...         "rank": 1, "decoded_token": "b"}}], "logprobs": {"top_logprobs": [
    ...         {"token_id:9": -0.3, "token_id:4": -1.5}]}}]}
    >>> scores = parse_prompt_logprobs(body, [5, 7])
    >>> scores.top, scores.returned
    ([[('token_id:7', -0.2)], [('token_id:9', -0.3), ('token_id:4', -1.5)]], [None, 'b'])

    Raises:
        MalformedResponseError: no ``prompt_logprobs`` with an entry per prompt token, or no
            ``logprobs.top_logprobs`` for the generated token.
    """
    try:
        choice = body["choices"][0]
        entries = choice["prompt_logprobs"]
        if len(entries) < len(ids):
            raise ValueError(f"{len(entries)} prompt_logprobs entries for {len(ids)} tokens")
        after_last = _sorted(_pairs(choice["logprobs"]["top_logprobs"][0]))
        top: list[list[tuple[str, float]]] = []
        returned: list[str | None] = [None]
        for i in range(1, len(ids)):
            entry = dict(entries[i])
            top.append(
                _sorted([(f"token_id:{int(t)}", float(v["logprob"])) for t, v in entry.items()])
            )
            returned.append(_decoded(entry.get(str(ids[i])), ids[i]))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedResponseError(
            f"response without prompt_logprobs for every prompt token ({exc!r}); the "
            "endpoint must be vLLM-compatible (prompt_logprobs and logprobs on completions "
            "with a token-id prompt), or set teacher.http.scoring to 'echo'"
        ) from exc
    return PromptScores(top=[*top, after_last], returned=returned)


def token_names(tokenizer: Any, token_id: int) -> set[str]:
    """The names an endpoint may give token ``token_id`` of ``tokenizer``.

    Its vocabulary string (``"Ġthe"``), its text (``" the"``, by ``decode`` or by
    ``convert_tokens_to_string``) and vLLM's ``"token_id:N"``.
    """
    piece = tokenizer.convert_ids_to_tokens(token_id)
    return {
        f"token_id:{token_id}",
        str(piece),
        str(tokenizer.decode([token_id])),
        str(tokenizer.convert_tokens_to_string([piece])),
    }


def first_mismatch(
    tokenizer: Any, ids: list[int], returned: list[str | None], shown: Any | None = None
) -> int | None:
    """The first position ``i`` whose ``returned[i]`` is not a name of ``ids[i]``, else ``None``.

    ``None`` entries (nothing returned) are not compared. With ``shown`` (a
    :class:`~kd_train.teachers.tokens.TokenMap`), the text a server shows after dropping
    invalid UTF-8 counts as a name too, and ``""`` for a special token (llama.cpp renders
    neither part of a character nor a special token).
    """
    pieces = tokenizer.convert_ids_to_tokens(ids)  # the common case, in one call
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    for i, (token_id, name) in enumerate(zip(ids, returned, strict=True)):
        if name is None or name == pieces[i] or name == f"token_id:{token_id}":
            continue
        if shown is not None:
            raw = shown.token_bytes[token_id] if token_id < len(shown.token_bytes) else None
            if raw is not None and name == raw.decode("utf-8", errors="ignore"):
                continue
            if name == "" and token_id in special:
                continue
        if name not in token_names(tokenizer, token_id):
            return i
    return None


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


def _decoded(item: Any, token_id: int) -> str:
    if item is None:
        return f"<no entry for id {token_id}>"
    decoded = dict(item).get("decoded_token")
    return f"token_id:{token_id}" if decoded is None else str(decoded)


def _raw(value: Any) -> list[int] | None:
    """A token's ``bytes`` field: a list of byte values, or ``None``."""
    if value is None:
        return None
    return [int(b) for b in value]


def _pairs(entry: Any) -> list[tuple[str, float]]:
    return [(str(t), float(lp)) for t, lp in dict(entry).items()]


def _sorted(pairs: list[tuple[str, float]]) -> list[tuple[str, float]]:
    return sorted(pairs, key=lambda p: -p[1])
