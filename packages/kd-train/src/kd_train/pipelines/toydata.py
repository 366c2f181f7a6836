"""Synthetic, deterministic datasets for the demo pipelines (no download, no randomness leak).

* :func:`tool_call_records`: requests answered by a tool call
  ``<call>NAME {"arg": value, ...}</call>`` with ``tool_name`` and ``json_args`` spans, and
  a share of small arithmetic tasks answered in code mode (``code_mode`` span); at most
  :data:`TOOL_CALL_ROWS` (9,828) distinct rows, every one at most once.
* :func:`eight_ball_records`: yes/no questions answered with one of the twenty classic
  Magic 8-Ball replies; the reply is a pure function of the question (a rule the student
  has to learn from the teacher).

The same ``seed`` always gives the same records, and no generator repeats a row.

>>> from kd_train.pipelines.toydata import tool_call_records
>>> rec = tool_call_records(3, seed=0)[0]
>>> [(s.kind, rec.completion[s.start:s.end][:8]) for s in rec.spans][:1][0][0]
'tool_name'
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from pathlib import Path

from kd_train.atomic import atomic_write_text
from kd_train.data.labels import MAGIC_8_BALL_ANSWERS
from kd_train.data.schema import KDRecord, Span

_CITIES = (
    "Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Quito", "Perth", "Delhi",
    "Rome", "Lagos", "Seoul", "Dubai", "Hanoi", "Bogota", "Accra", "Riga",
)  # fmt: skip
_UNITS = ("celsius", "fahrenheit")
_DAYS = ("today", "Sunday", "Monday")
_CLOCKS = ("12h", "24h", "iso")
_CONTACTS = ("Ana", "Bo", "Chen", "Dara", "Eli", "Femi", "Gus", "Hana", "Ivo", "Jun")
_TOPICS = (
    "lunch",
    "the report",
    "the trip",
    "rain",
    "the game",
    "dinner",
    "the budget",
    "the move",
)
_OPERANDS = range(2, 100)

#: How many distinct records :func:`tool_call_records` can make (the sum over its four
#: kinds: code-mode sums, weather, messages, clocks).
TOOL_CALL_ROWS = (
    len(_OPERANDS) ** 2
    + len(_CITIES) * len(_UNITS) * len(_DAYS)
    + len(_CONTACTS) * len(_TOPICS)
    + len(_CITIES) * len(_CLOCKS)
)


def _tool_call(name: str, args: dict[str, object]) -> tuple[str, list[Span]]:
    """The completion text of a tool call and its ``tool_name`` / ``json_args`` spans."""
    head = "<call>"
    body = json.dumps(args)
    text = f"{head}{name} {body}</call>"
    name_at = len(head)
    args_at = name_at + len(name) + 1
    return text, [
        Span("tool_name", name_at, name_at + len(name)),
        Span("json_args", args_at, args_at + len(body)),
    ]


def _draw_tool_call(rng: random.Random, code_share: float) -> tuple[str, str, list[Span]]:
    """One ``(prompt, completion, spans)``: about ``code_share`` of them code-mode sums."""
    kind = rng.random()
    if kind < code_share:
        a, b = rng.choice(_OPERANDS), rng.choice(_OPERANDS)
        code = f"print({a} + {b})"
        return (
            f"Use code to add {a} and {b}.\n",
            f"<code>{code}</code>",
            [Span("code_mode", 6, 6 + len(code))],
        )
    if kind < 0.6:
        city, unit, day = rng.choice(_CITIES), rng.choice(_UNITS), rng.choice(_DAYS)
        prompt = f"{city} weather {day}, in {unit}?\n"
        return prompt, *_tool_call("get_weather", {"city": city, "unit": unit, "day": day})
    if kind < 0.8:
        who, topic = rng.choice(_CONTACTS), rng.choice(_TOPICS)
        prompt = f"Send {who} a message about {topic}.\n"
        return prompt, *_tool_call("send_message", {"to": who, "text": topic})
    city, clock = rng.choice(_CITIES), rng.choice(_CLOCKS)
    prompt = f"What time is it in {city} ({clock})?\n"
    return prompt, *_tool_call("get_time", {"city": city, "clock": clock})


def tool_call_records(n: int, seed: int = 0, code_share: float = 0.25) -> list[KDRecord]:
    """``n`` distinct tool-call records; about ``code_share`` of them are code-mode arithmetic.

    No two records share their prompt and completion (so no two share a token sequence,
    and a held-out slice never repeats a training row): a draw that repeats an earlier
    one is drawn again, so a kind whose rows run out gives way to the others. The first
    ``m`` records of ``tool_call_records(n, seed)`` are ``tool_call_records(m, seed)``.

    Raises:
        ValueError: ``n`` is above :data:`TOOL_CALL_ROWS`, the distinct rows there are.

    >>> from kd_train.pipelines.toydata import tool_call_records
    >>> rows = tool_call_records(300, seed=1)
    >>> len({(r.prompt, r.completion) for r in rows})
    300
    """
    if n > TOOL_CALL_ROWS:
        raise ValueError(f"tool_call_records makes at most {TOOL_CALL_ROWS} distinct rows, not {n}")
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not security
    seen: set[tuple[str, str]] = set()
    records: list[KDRecord] = []
    while len(records) < n:
        prompt, completion, spans = _draw_tool_call(rng, code_share)
        if (prompt, completion) in seen:
            continue
        seen.add((prompt, completion))
        records.append(
            KDRecord(
                id=f"tool-{seed}-{len(records)}", prompt=prompt, completion=completion, spans=spans
            )
        )
    return records


_SUBJECTS = ("I", "we", "my team", "the cat", "our plan", "the weather", "my friend")
_VERBS = ("win", "succeed", "travel", "finish", "change", "improve", "arrive")
_WHEN = ("today", "tomorrow", "soon", "this year", "next week")


def eight_ball_answer(verb: str, when: str) -> str:
    """The teacher's rule: the reply is picked by a hash of the question's verb and time.

    The subject does not matter, so a question held out of training is answered by the
    same rule as the training questions that share its verb and time.
    """
    digest = hashlib.sha256(f"{verb}|{when}".encode()).digest()
    return MAGIC_8_BALL_ANSWERS[digest[0] % len(MAGIC_8_BALL_ANSWERS)]


def eight_ball_questions() -> list[tuple[str, str]]:
    """Every ``(question, answer)`` of the toy 8-ball grammar (245, all distinct), in order."""
    return [
        (f"Will {s} {v} {w}?", eight_ball_answer(v, w))
        for s in _SUBJECTS
        for v in _VERBS
        for w in _WHEN
    ]


def eight_ball_records(seed: int = 0) -> list[KDRecord]:
    """One record per question, shuffled by ``seed``: prompt ``Q: <question> A:``, reply."""
    pairs = eight_ball_questions()
    random.Random(seed).shuffle(pairs)  # noqa: S311 - synthetic data, not security
    return [
        KDRecord(id=f"8ball-{i}", prompt=f"Q: {q}\nA:", completion=f" {a}")
        for i, (q, a) in enumerate(pairs)
    ]


def corpus_of(records: Iterable[KDRecord]) -> list[str]:
    """The texts of ``records`` (prompt + completion), to train a tokenizer on."""
    return [r.prompt + r.completion for r in records]


def write_jsonl(path: Path, records: Iterable[KDRecord]) -> Path:
    """Write ``records`` as a JSONL dataset, atomically."""
    atomic_write_text(path, "".join(json.dumps(r.to_dict()) + "\n" for r in records))
    return path
