"""The JSON answers of the loopback server, in the OpenAI (and vLLM) completion formats.

``POST /v1/completions`` takes a text or token-id ``prompt``, ``echo``, ``logprobs``, and
vLLM's ``prompt_logprobs`` and ``return_tokens_as_token_ids``; ``POST
/v1/chat/completions`` takes ``messages`` and ``logprobs``/``top_logprobs``. Token strings
are the tokenizer's vocabulary strings (or ``"token_id:N"`` when asked), so
:func:`~kd_train.teachers.openai_api.token_to_id` maps them back exactly.
``prompt_logprobs[i]`` (``None`` for ``i = 0``) is vLLM's
``{"<id>": {"logprob", "rank", "decoded_token"}}`` of the top-k after the tokens before
``i``, plus prompt token ``i`` itself when it is outside the top-k.
"""

from __future__ import annotations

from typing import Any

from kd_train.testing.server.model import ServedModel


def build_answer(
    model: ServedModel, path: str, body: dict[str, Any], *, extra_billed_tokens: int = 0
) -> tuple[dict[str, Any], dict[str, int]]:
    """Run ``model`` on the request ``body`` sent to ``path``; return the answer and its usage.

    The answer has no ``usage`` key (the server adds it when it reports usage). The usage
    counts ``extra_billed_tokens`` more completion tokens than were produced: a provider
    that bills more than ``max_tokens`` (ignores it).
    """
    chat = path.endswith("/chat/completions")
    if chat:
        prompt: str | list[int] = "\n".join(m["content"] for m in body["messages"])
        k = int(body.get("top_logprobs") or 0) if body.get("logprobs") else 0
    else:
        prompt, k = body["prompt"], int(body.get("logprobs") or 0)
    ids = model.encode(prompt)
    echo = bool(body.get("echo")) and not chat
    as_ids = bool(body.get("return_tokens_as_token_ids"))
    new, logprobs = model.run(ids, int(body.get("max_tokens", 16)))
    tok = model.tokenizer
    shown = range(1 if echo else len(ids), len(ids) + len(new))
    tokens = model.names(ids + new if echo else new, as_ids)
    tops = [model.top(logprobs[i - 1], k, as_ids) if k else [] for i in shown]
    text = str(tok.decode(new, skip_special_tokens=True))
    usage = {"prompt_tokens": len(ids), "completion_tokens": len(new) + extra_billed_tokens}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    if chat:
        content = [
            {
                "token": t,
                "logprob": top[0][1] if top else 0.0,
                "top_logprobs": [{"token": a, "logprob": lp} for a, lp in top],
            }
            for t, top in zip(tokens, tops, strict=True)
        ]
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": {"content": content} if k else None,
            "finish_reason": "stop",
        }
    else:
        top_dicts: list[dict[str, float] | None] = [dict(t) for t in tops]
        if echo:
            top_dicts.insert(0, None)
            text = str(tok.decode(ids, skip_special_tokens=True)) + text
        choice = {
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
    answer = {"object": "completion", "model": body.get("model", ""), "choices": [choice]}
    return answer, usage
