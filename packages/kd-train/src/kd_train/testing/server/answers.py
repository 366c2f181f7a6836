"""The JSON answers of the loopback server, in the OpenAI (and vLLM) or llama.cpp formats.

``POST /v1/completions`` takes a text or token-id ``prompt``, ``echo``, ``logprobs``, and
vLLM's ``prompt_logprobs`` and ``return_tokens_as_token_ids``; ``POST
/v1/chat/completions`` takes ``messages`` and ``logprobs``/``top_logprobs``.

``style="openai"`` (the default): token strings are the tokenizer's vocabulary strings (or
``"token_id:N"`` when asked); an echo answer has ``n + 1`` entries, entry ``i`` the
distribution *before* token ``i`` (``None`` for ``i = 0``); ``prompt_logprobs[i]`` (``None``
for ``i = 0``) is vLLM's ``{"<id>": {"logprob", "rank", "decoded_token"}}`` of the top-k
after the tokens before ``i``, plus prompt token ``i`` itself when it is outside the top-k.
A token id outside the vocabulary is refused (HTTP 400, a validation error).

``style="llama.cpp"`` answers like ``llama-cpp-python``'s server (0.3.x, a model without
BOS; ``tests/integration/fixtures/llamacpp`` holds its recorded answers, and a test keeps
the two alike): token strings are the token's text with invalid UTF-8 dropped (``""``
for part of a character or a special token), so alternatives shown alike collapse into one
key, and every ``top_logprobs`` object also holds the token at that position; an echo
answer has one entry per *evaluated* token, entry ``i`` the distribution *after* token
``i`` (shifted by one), and none for the last generated token; a token-id prompt is refused
with HTTP 500 carrying pydantic's validation errors; ``max_tokens: 0`` means no limit;
chat entries carry ``bytes: null``; unknown request fields are ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from kd_train.testing.server.model import ServedModel

Style = Literal["openai", "llama.cpp"]

#: The most tokens a ``max_tokens: 0`` (no limit) request generates in the llama.cpp style.
UNLIMITED_TOKENS = 16


class Refusal(Exception):  # noqa: N818 - an answer, not a bug
    """The request is refused as invalid: ``status`` and the JSON ``body`` to send."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body


def build_answer(
    model: ServedModel,
    path: str,
    body: dict[str, Any],
    *,
    extra_billed_tokens: int = 0,
    style: Style = "openai",
) -> tuple[dict[str, Any], dict[str, int]]:
    """Run ``model`` on the request ``body`` sent to ``path``; return the answer and its usage.

    The answer has no ``usage`` key (the server adds it when it reports usage). The usage
    counts ``extra_billed_tokens`` more completion tokens than were produced: a provider
    that bills more than ``max_tokens`` (ignores it).

    Raises:
        Refusal: the request is invalid (a token-id prompt the style refuses, an id
            outside the vocabulary).
    """
    chat = path.endswith("/chat/completions")
    if chat:
        prompt: str | list[int] = "\n".join(m["content"] for m in body["messages"])
        k = int(body.get("top_logprobs") or 0) if body.get("logprobs") else 0
    else:
        prompt, k = body["prompt"], int(body.get("logprobs") or 0)
    _check_prompt(model, prompt, style)
    ids = model.encode(prompt)
    max_tokens = body.get("max_tokens", 16)
    if style == "llama.cpp" and not max_tokens:
        max_tokens = UNLIMITED_TOKENS
    new, logprobs = model.run(ids, int(max_tokens))
    if style == "llama.cpp":
        choice = _llamacpp_choice(model, ids, new, logprobs, k, chat, bool(body.get("echo")))
    else:
        choice = _openai_choice(model, ids, new, logprobs, k, chat, body)
    usage = {"prompt_tokens": len(ids), "completion_tokens": len(new) + extra_billed_tokens}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    kind = "chat.completion" if chat else ("text_completion" if style != "openai" else "completion")
    answer = {"object": kind, "model": body.get("model", ""), "choices": [choice]}
    if style == "llama.cpp":
        answer = {"id": "cmpl-loopback", "object": kind, "created": 0, **answer}
    return answer, usage


def _check_prompt(model: ServedModel, prompt: Any, style: Style) -> None:
    if not isinstance(prompt, list):
        return
    if style == "llama.cpp":
        errors = [
            f"  {{'type': 'string_type', 'loc': ('body', 'prompt', 'list[str]', {i}), "
            f"'msg': 'Input should be a valid string', 'input': {t}}}"
            for i, t in enumerate(prompt)
        ]
        message = f"{len(errors) + 1} validation errors:\n" + "\n".join(errors)
        error = {"message": message, "type": "internal_server_error", "param": None, "code": None}
        raise Refusal(500, {"error": error})
    size = model.vocab_size()
    bad = [t for t in prompt if not isinstance(t, int) or not 0 <= t < size]
    if bad:
        message = f"1 validation error: prompt: token ids {bad[:3]} are outside the vocabulary"
        raise Refusal(400, {"error": {"message": message, "type": "invalid_request_error"}})


def _openai_choice(
    model: ServedModel,
    ids: list[int],
    new: list[int],
    logprobs: Any,
    k: int,
    chat: bool,
    body: dict[str, Any],
) -> dict[str, Any]:
    tok = model.tokenizer
    echo = bool(body.get("echo")) and not chat
    as_ids = bool(body.get("return_tokens_as_token_ids"))
    shown = range(1 if echo else len(ids), len(ids) + len(new))
    tokens = model.names(ids + new if echo else new, as_ids)
    tops = [model.top(logprobs[i - 1], k, as_ids) if k else [] for i in shown]
    text = str(tok.decode(new, skip_special_tokens=True))
    if chat:
        content = [
            {
                "token": t,
                "logprob": top[0][1] if top else 0.0,
                "top_logprobs": [{"token": a, "logprob": lp} for a, lp in top],
            }
            for t, top in zip(tokens, tops, strict=True)
        ]
        return {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": {"content": content} if k else None,
            "finish_reason": "stop",
        }
    top_dicts: list[dict[str, float] | None] = [dict(t) for t in tops]
    if echo:
        top_dicts.insert(0, None)
        text = str(tok.decode(ids, skip_special_tokens=True)) + text
    choice: dict[str, Any] = {
        "index": 0,
        "text": text,
        "logprobs": {"tokens": tokens, "top_logprobs": top_dicts} if k else None,
        "finish_reason": "stop",
    }
    if body.get("prompt_logprobs"):
        pk = int(body["prompt_logprobs"])
        choice["prompt_logprobs"] = [None] + [
            model.prompt_entry(logprobs[i - 1], ids[i], pk) for i in range(1, len(ids))
        ]
    return choice


def _llamacpp_choice(
    model: ServedModel,
    ids: list[int],
    new: list[int],
    logprobs: Any,
    k: int,
    chat: bool,
    echo: bool,
) -> dict[str, Any]:
    """llama-cpp-python's ``_create_completion`` logprobs, position by position."""
    tok = model.tokenizer
    echo = echo and not chat
    text = str(tok.decode(new, skip_special_tokens=True))
    stopped = bool(new) and new[-1] == tok.eos_token_id
    if stopped:
        new = new[:-1]  # the stop token is not part of the answer
    finish = "stop" if stopped else "length"
    # llama.cpp evaluates the prompt and every generated token but an unstopped last one
    evaluated = len(ids) + len(new) - (0 if stopped else 1)
    start = 0 if echo else len(ids) - 1
    tokens_all = ids + new if echo else new
    rows = evaluated if echo else len(new)
    entries: list[tuple[str, float, dict[str, float]]] = []
    for idx in range(rows):
        token, row = tokens_all[idx], logprobs[start + idx]
        names = model.shown([token])[0]
        values, best = row.topk(k) if k else (row[:0], row[:0].long())
        top = dict(zip(model.shown(best.tolist()), (float(v) for v in values), strict=True))
        top.update({names: float(row[token])})
        entries.append((names, float(row[token]), top))
    if chat:
        content = [
            {
                "token": name,
                "logprob": lp,
                "bytes": None,
                "top_logprobs": [
                    {"token": a, "logprob": v, "bytes": None} for a, v in list(top.items())[:k]
                ],
            }
            for name, lp, top in entries
        ]
        return {
            "index": 0,
            "message": {"content": text, "role": "assistant"},
            "logprobs": {"content": content, "refusal": None} if k else None,
            "finish_reason": finish,
        }
    token_logprobs: list[float | None] = [lp for _, lp, _ in entries]
    top_logprobs: list[dict[str, float] | None] = [top for _, _, top in entries]
    if echo and entries:
        token_logprobs[0], top_logprobs[0] = None, None
        text = str(tok.decode(ids, skip_special_tokens=True)) + text
    offsets, at = [], 0
    for name, _, _ in entries:
        offsets.append(at)
        at += len(name)
    logprobs_out = {
        "text_offset": offsets,
        "token_logprobs": token_logprobs,
        "tokens": [name for name, _, _ in entries],
        "top_logprobs": top_logprobs,
    }
    return {
        "text": text,
        "index": 0,
        "logprobs": logprobs_out if k else None,
        "finish_reason": finish,
    }
