r"""Prompt scoring as real servers answer it: their prompt form and alignment, probed once.

A scoring answer holds, for the prompt tokens ``x_0 .. x_{n-1}``, a list of entries ``E``
(:class:`Scored`). Servers disagree on what ``E[j]`` is:

* ``"standard"`` (OpenAI's legacy echo, vLLM's ``prompt_logprobs``): ``E[j]`` is
  :math:`p(\cdot \mid x_{<j})`, ``E[0]`` is ``None``, and ``E[n]`` (the generated token's)
  is the distribution after the whole prompt;
* ``"shifted"`` (llama.cpp's server without a BOS token): ``E[j]`` is
  :math:`p(\cdot \mid x_{\le j})`, ``E[0]`` is ``None`` (so the distribution after ``x_0``
  is missing) and there is no ``E[n]``.

Servers also disagree on the prompt: vLLM and OpenAI take token ids, llama.cpp's server
refuses them (HTTP 500 carrying a validation error) and takes text only.

:func:`probe_endpoint` establishes both once per endpoint, with a question whose answer is
known: it asks for the distribution after a prefix of :data:`PROBE_TEXT` by *generating*
one token (the first generated token's ``top_logprobs`` is that distribution on every
server), then scores the whole text and finds that distribution in the entries: at
``E[m]`` the endpoint is ``standard``, at ``E[m-1]`` ``shifted``, anywhere else or both
places it is refused. A token-id prompt is tried first; a refusal falls back to text.

>>> from kd_train.teachers.http.scoring import Scored, after_each
>>> s = Scored(names=["a", "b"], entries=[None, [("b", -0.1)], [("c", -0.2)]])
>>> after_each(s, 2, "standard")
[[('b', -0.1)], [('c', -0.2)]]
>>> after_each(s, 2, "shifted")
[None, [('b', -0.1)]]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from kd_train.teachers.http.exchange import HTTPTeacherError, RequestRefusedError, Response
from kd_train.teachers.openai_api import (
    PATHS,
    MalformedResponseError,
    Scoring,
    first_mismatch,
    sampling_params,
    scoring_request,
)

Alignment = Literal["standard", "shifted"]
Entry = list[tuple[str, float]]

#: The probe's prompt, and the prefix whose next-token distribution is asked for.
PROBE_TEXT = "Paris is the capital of France, and Rome is the capital of Italy."
PROBE_PREFIX = "Paris is the capital of France"

#: The largest log-prob difference between the generated and the scored distribution, since
#: llama.cpp scores a prefix alone and inside a longer batch differently (up to 0.29 over 47
#: positions of SmolLM2 Q4_1, mean 0.07).
PROBE_TOLERANCE = 0.3

#: ``send(path, body, prompt_tokens, completion_tokens)``: a request through the stack.
Send = Callable[[str, dict[str, Any], int, int], Response]


@dataclass(frozen=True)
class Scored:
    """A scoring answer as sent: how the endpoint names each prompt token, and its entries.

    Attributes:
        names: per prompt token (and any generated one the endpoint lists), its name; ``None``
            where the answer does not say (``x_0`` of ``prompt_logprobs``).
        entries: the per-token distributions in the answer's order, most likely first;
            ``None`` where there is none.
    """

    names: list[str | None]
    entries: list[Entry | None]


@dataclass(frozen=True)
class EndpointShape:
    """What the probe established: whether token ids are accepted, and the alignment."""

    ids: bool
    alignment: Alignment


def after_each(scored: Scored, n: int, alignment: Alignment) -> list[Entry | None]:
    """Per prompt position ``i < n``, the distribution of the token after ``x_i`` (or None)."""
    entries = scored.entries
    if alignment == "shifted":
        return [entries[i] if i < len(entries) else None for i in range(n)]
    return [entries[i + 1] if i + 1 < len(entries) else None for i in range(n)]


def read_scores(scoring: Scoring, body: Any, ids: list[int] | None = None) -> Scored:
    """Parse a scoring answer of the ``scoring`` form into :class:`Scored`.

    ``echo``: ``logprobs.tokens`` and ``logprobs.top_logprobs``. ``prompt_logprobs``:
    vLLM's ``prompt_logprobs`` (keys written ``"token_id:N"``; the name of ``x_i`` is the
    ``decoded_token`` of ``ids[i]`` in entry ``i``), then the generated token's
    ``logprobs.top_logprobs[0]``.

    Raises:
        MalformedResponseError: the fields are missing or of the wrong type.
    """
    try:
        choice = body["choices"][0]
        if scoring == "prompt_logprobs":
            return _read_prompt_logprobs(choice, ids or [])
        logprobs = choice["logprobs"]
        names: list[str | None] = [str(t) for t in logprobs["tokens"]]
        entries = [_entry(e) if e is not None else None for e in logprobs["top_logprobs"]]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedResponseError(
            f"{scoring} answer without per-token top log-probs ({exc!r}); the endpoint must "
            "support completions with echo=true and logprobs"
            + (" and vLLM's prompt_logprobs" if scoring == "prompt_logprobs" else "")
        ) from exc
    return Scored(names, entries)


def _read_prompt_logprobs(choice: dict[str, Any], ids: list[int]) -> Scored:
    names: list[str | None] = []
    entries: list[Entry | None] = []
    for i, item in enumerate(choice["prompt_logprobs"]):
        if item is None:
            names.append(None)
            entries.append(None)
            continue
        entry = dict(item)
        entries.append(_entry({f"token_id:{int(t)}": v["logprob"] for t, v in entry.items()}))
        own = entry.get(str(ids[i])) if i < len(ids) else None
        decoded = dict(own).get("decoded_token") if own is not None else None
        names.append(None if decoded is None else str(decoded))
    entries.append(_entry(choice["logprobs"]["top_logprobs"][0]))
    return Scored(names, entries)


def _entry(raw: Any) -> Entry:
    return sorted(((str(t), float(lp)) for t, lp in dict(raw).items()), key=lambda p: -p[1])


def _close(generated: Entry, entry: Entry | None, k: int) -> bool:
    """Whether ``entry`` is the ``generated`` distribution, up to a server's noise.

    The same most likely token, and the top ``min(k, 3)`` of each share all but at most one
    token, at log-probs within :data:`PROBE_TOLERANCE` (near ties may swap between runs).
    """
    k = min(k, 3)
    if entry is None or not entry or not generated or generated[0][0] != entry[0][0]:
        return False
    mine, theirs = dict(generated[:k]), dict(entry[:k])
    shared = set(mine) & set(theirs)
    if len(shared) < min(len(mine), len(theirs)) - 1:
        return False
    return all(abs(mine[t] - theirs[t]) <= PROBE_TOLERANCE for t in shared)


def probe_endpoint(
    send: Send,
    scoring: Scoring,
    model: str,
    tokenizer: Any,
    k: int,
    base_url: str,
    shown: Any | None = None,
) -> EndpointShape:
    """Establish how the endpoint scores prompts (see the module docstring).

    Args:
        send: sends one request through the teacher's stack (cache, budget, retries).
        scoring: the request form.
        model: the model name.
        tokenizer: the student's (= teacher's) tokenizer.
        k: alternatives per position.
        base_url: the endpoint, for messages.
        shown: the tokenizer's :class:`~kd_train.teachers.tokens.TokenMap`, to read the
            names the endpoint gives the probe's tokens.

    Raises:
        HTTPTeacherError: the endpoint's answers fit neither alignment, or both; it refuses
            a prompt form the scoring form needs; or it reads the probe's tokens otherwise
            than the tokenizer (another tokenizer).
    """
    full = list(tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"])
    prefix = list(tokenizer(PROBE_PREFIX, add_special_tokens=False)["input_ids"])
    m = len(prefix)
    path = PATHS["completions"]
    extra = {"return_tokens_as_token_ids": True} if scoring == "prompt_logprobs" else {}

    def generated(prompt: list[int] | str) -> Entry:
        body = {"model": model, "prompt": prompt, "max_tokens": 1, "logprobs": k}
        body.update(sampling_params(0.0, extensions=False), **extra)
        answer = send(path, body, len(full) + 16, 1)
        try:
            return _entry(answer.body["choices"][0]["logprobs"]["top_logprobs"][0])
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise HTTPTeacherError(
                f"{base_url}: the probe's generation has no top log-probs ({exc!r}); the "
                "endpoint must return logprobs on completions"
            ) from exc

    try:
        after_prefix, ids = generated(prefix), True
    except RequestRefusedError as exc:
        if scoring == "prompt_logprobs":
            raise HTTPTeacherError(
                f"{base_url} refuses token-id prompts ({exc}); prompt_logprobs scoring needs "
                "them (vLLM); for llama.cpp's server set teacher.http.scoring to 'echo'"
            ) from exc
        after_prefix, ids = generated(PROBE_PREFIX), False
    body = scoring_request(scoring, model, full if ids else PROBE_TEXT, k)
    try:
        scored = read_scores(scoring, send(path, body, len(full) + 16, 1).body)
    except MalformedResponseError as exc:
        raise HTTPTeacherError(f"{base_url}: {exc}") from exc
    names = scored.names[: len(full)]
    bad = first_mismatch(tokenizer, full, names, shown) if len(names) == len(full) else 0
    if bad is not None:
        got = names[bad] if bad < len(names) else None
        raise HTTPTeacherError(
            f"{base_url}: the endpoint reads the probe {PROBE_TEXT!r} as other tokens than the "
            f"student's tokenizer ({len(names)} tokens, position {bad}: {got!r}, the "
            f"tokenizer's {tokenizer.convert_ids_to_tokens(full[bad])!r}): it serves another "
            "tokenizer; cross-tokenizer distillation is not supported by an HTTP teacher"
        )
    fits = {
        alignment
        for alignment, at in (("standard", m), ("shifted", m - 1))
        if at < len(scored.entries) and _close(after_prefix, scored.entries[at], k)
    }
    if len(fits) != 1:
        seen = "fits both alignments" if fits else "is at neither E[m] nor E[m-1]"
        raise HTTPTeacherError(
            f"{base_url}: cannot establish how it aligns prompt scores: the distribution "
            f"after the probe's first {m} tokens (generated: {after_prefix[:3]}) {seen} of "
            f"its {scoring} answer ({len(scored.entries)} entries for {len(full)} tokens). "
            "Score with another server, or another teacher.http.scoring"
        )
    alignment: Alignment = "standard" if "standard" in fits else "shifted"
    return EndpointShape(ids=ids, alignment=alignment)
