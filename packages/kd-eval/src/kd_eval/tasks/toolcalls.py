"""Tool-call metrics: JSON validity, tool-name accuracy, argument F1 (strict and lax).

A tool call is a JSON object ``{"name": str, "arguments": object}`` (``"tool"``/``"args"``
are accepted aliases); in generated text the first balanced ``{...}`` that parses is used.

Arguments are compared as sets of ``(key, value)`` pairs. With ``M`` = pairs of the
prediction that match a reference pair, precision ``P = M / |pred|``, recall
``R = M / |ref|``, ``F1 = 2PR / (P + R)`` (1 when both are empty, 0 when ``M = 0``).
*Strict* matching compares values exactly (as canonical JSON); *lax* matching compares
:func:`normalize_value` of each: strings are trimmed, case-folded, spaces collapsed, and a
string that reads as a number or a boolean becomes one, so ``"5"`` matches ``5.0``.

Degenerate inputs have these values: a call with no arguments against a reference with
none scores F1 1 (nothing was asked, nothing was added); an empty prediction against a
non-empty reference, or the reverse, scores 0; an output with no parsable call is invalid
JSON, a wrong name and F1 0. Values are compared by their canonical JSON, so ``NaN``
matches ``NaN`` (both are written ``NaN``) and, in lax matching, ``-0.0`` matches ``0``.
Aggregating zero examples is refused with :class:`~kd_eval.errors.MetricInputError`:
a rate over no examples has no value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kd_eval.errors import MetricInputError


@dataclass(frozen=True)
class ToolCall:
    """A parsed tool call: its name and its arguments."""

    name: str
    arguments: dict[str, Any]

    def key(self) -> str:
        """Canonical JSON of the call (sorted keys): how fixtures are looked up."""
        return json.dumps({"name": self.name, "arguments": self.arguments}, sort_keys=True)


def parse_tool_call(text: str) -> ToolCall | None:
    """Parse the first JSON object in ``text`` that is a tool call; ``None`` if there is none.

    >>> from kd_eval.tasks.toolcalls import parse_tool_call
    >>> parse_tool_call('call: {"name": "f", "arguments": {"x": 1}} done')
    ToolCall(name='f', arguments={'x': 1})
    >>> parse_tool_call('{"name": "f", "arguments": ') is None
    True
    """
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            obj = None
        call = _as_call(obj)
        if call is not None:
            return call
        start = text.find("{", start + 1)
    return None


def _as_call(obj: Any) -> ToolCall | None:
    if not isinstance(obj, dict):
        return None
    name = obj.get("name", obj.get("tool"))
    args = obj.get("arguments", obj.get("args", {}))
    if isinstance(args, str):  # OpenAI style: arguments as a JSON string
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(name, str) or not isinstance(args, dict):
        return None
    return ToolCall(name, args)


def normalize_value(value: Any) -> Any:
    """Normalise an argument value for lax matching (see the module docstring).

    >>> from kd_eval.tasks.toolcalls import normalize_value
    >>> normalize_value("  New   York "), normalize_value("5"), normalize_value("TRUE")
    ('new york', 5.0, True)
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value) + 0.0  # + 0.0: -0.0 becomes 0.0
    if isinstance(value, str):
        text = " ".join(value.split()).casefold()
        if text in ("true", "false"):
            return text == "true"
        try:
            number = float(text)
        except ValueError:
            return text
        return number + 0.0 if math.isfinite(number) else text
    if isinstance(value, list):
        return [normalize_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k).casefold(): normalize_value(v) for k, v in value.items()}
    return value


def argument_f1(predicted: dict[str, Any], reference: dict[str, Any], *, lax: bool) -> float:
    """F1 of the predicted ``(key, value)`` pairs against the reference pairs.

    >>> from kd_eval.tasks.toolcalls import argument_f1
    >>> argument_f1({"city": "Paris", "unit": "F"}, {"city": "Paris", "unit": "C"}, lax=False)
    0.5
    >>> argument_f1({}, {}, lax=False), argument_f1({}, {"city": "Paris"}, lax=True)
    (1.0, 0.0)
    """
    if not predicted and not reference:
        return 1.0

    def canon(args: dict[str, Any]) -> set[tuple[str, str]]:
        if lax:
            args = normalize_value(args)
        return {(k, json.dumps(v, sort_keys=True)) for k, v in args.items()}

    pred, ref = canon(predicted), canon(reference)
    matched = len(pred & ref)
    if matched == 0:
        return 0.0
    precision, recall = matched / len(pred), matched / len(ref)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class ToolCallScore:
    """The scores of one predicted call against its reference."""

    valid_json: bool
    name_correct: bool
    args_f1_strict: float
    args_f1_lax: float
    fixture_hit: bool | None


def score_tool_call(
    output: str, reference: ToolCall, fixtures: dict[str, Any] | None = None
) -> ToolCallScore:
    """Score generated ``output`` against ``reference``; replay it from ``fixtures`` if given.

    ``fixture_hit`` is whether the predicted call (canonical JSON, :meth:`ToolCall.key`) has
    a recorded result in ``fixtures``; ``None`` when no fixtures were given.
    """
    call = parse_tool_call(output)
    hit = None if fixtures is None else (call is not None and call.key() in fixtures)
    if call is None:
        return ToolCallScore(False, False, 0.0, 0.0, hit)
    return ToolCallScore(
        valid_json=True,
        name_correct=call.name == reference.name,
        args_f1_strict=argument_f1(call.arguments, reference.arguments, lax=False),
        args_f1_lax=argument_f1(call.arguments, reference.arguments, lax=True),
        fixture_hit=hit,
    )


def aggregate_tool_scores(scores: Sequence[ToolCallScore]) -> dict[str, float | int | None]:
    """Rates over examples: JSON validity, name accuracy, mean argument F1s, fixture hit-rate.

    An invalid output counts as a wrong name and an argument F1 of 0. ``fixture_hit_rate``
    is ``None`` when no example was replayed against fixtures.

    Raises:
        kd_eval.errors.MetricInputError: ``scores`` is empty.

    >>> from kd_eval.tasks.toolcalls import ToolCallScore, aggregate_tool_scores
    >>> s = [ToolCallScore(True, True, 0.5, 1.0, None), ToolCallScore(False, False, 0, 0, None)]
    >>> aggregate_tool_scores(s)["json_validity"]
    0.5
    """
    n = len(scores)
    if n == 0:
        raise MetricInputError("tool-call metrics of zero examples: the eval set is empty")
    hits = [s.fixture_hit for s in scores if s.fixture_hit is not None]
    return {
        "n": n,
        "json_validity": sum(s.valid_json for s in scores) / n,
        "tool_name_accuracy": sum(s.name_correct for s in scores) / n,
        "args_f1_strict": sum(s.args_f1_strict for s in scores) / n,
        "args_f1_lax": sum(s.args_f1_lax for s in scores) / n,
        "fixture_hit_rate": sum(hits) / len(hits) if hits else None,
    }
