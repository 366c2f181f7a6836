"""Greedy generation with and without a drafter, instrumented to count what happened.

Assisted generation (``teacher.generate(..., assistant_model=student)``, greedy) runs in
rounds. In each round the student drafts up to ``K`` tokens after the sequence so far; the
teacher scores the sequence plus the draft in one forward; the longest prefix of the draft
that equals the teacher's own greedy choices is accepted, and the teacher adds one token of
its own (the correction at the first mismatch, or the token after a fully accepted draft).
The output is the teacher's greedy output, whatever the drafter proposes.

The counts come from the models, not from a model of the algorithm:

* **teacher forwards** ``F``: calls of the teacher's ``forward``, counted by a forward hook
  (the prefill is the first round's forward, so the teacher alone needs one forward per
  new token);
* **proposed** ``P``: every draft the student returns from its ``generate`` (which the
  candidate generator calls once per round) is recorded with the position it starts at;
  ``P`` is the sum of the drafts' lengths;
* **accepted** ``A``: for each draft, the number of its leading tokens that equal the final
  output at the same positions (:func:`accepted_tokens`). A rejected token ends the count
  for its draft: the teacher's token at that position differs from it by definition.

Then the acceptance rate is ``A / P`` and the tokens per teacher forward ``N / F`` for ``N``
new tokens. ``N - F`` counts the accepted tokens too, except when the teacher stops on an
end-of-sequence token inside a draft (transformers drops the bonus token then), which is
why ``A`` is counted from the drafts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from kd_train.cliutil import drop_log_messages

from kd_eval.errors import KDEvalError

#: The assistant settings pinned while drafting, so that every round proposes ``K`` tokens:
#: a constant schedule (transformers' ``heuristic`` one carries state across calls) and no
#: confidence threshold (which would end a draft early, and adapts across rounds).
DRAFT_SETTINGS = (
    "num_assistant_tokens",
    "num_assistant_tokens_schedule",
    "assistant_confidence_threshold",
)


#: transformers' candidate generator passes its own generation config together with
#: ``max_new_tokens`` to the assistant's ``generate``, then warns about it; nothing the caller
#: passes causes it, so that one message is dropped while drafting.
_INTERNAL_WARNING = (
    r"Passing `generation_config` together with generation-related arguments=.* "
    r"is deprecated .*"
)


@dataclass(frozen=True)
class Generation:
    """One greedy generation: the new token ids, the teacher's forwards and the seconds."""

    new_ids: list[int]
    teacher_forwards: int
    seconds: float


@dataclass(frozen=True)
class AssistedGeneration(Generation):
    """An assisted generation, with the drafted (``proposed``) and accepted token counts."""

    proposed: int
    accepted: int


def accepted_tokens(drafts: Sequence[tuple[int, Sequence[int]]], sequence: Sequence[int]) -> int:
    """Count the draft tokens the output kept: each draft's prefix that matches ``sequence``.

    Args:
        drafts: ``(start, tokens)`` per round: the draft and the position of its first token.
        sequence: the final output (prompt and new tokens).

    >>> from kd_eval.drafter.counting import accepted_tokens
    >>> accepted_tokens([(2, [7, 8, 9]), (5, [4, 4])], [1, 2, 7, 8, 5, 4, 6])
    3
    """
    total = 0
    for start, tokens in drafts:
        for offset, token in enumerate(tokens):
            position = start + offset
            if position >= len(sequence) or sequence[position] != token:
                break
            total += 1
    return total


@contextmanager
def counting_forwards(model: torch.nn.Module) -> Iterator[list[int]]:
    """Count the calls of ``model``'s forward inside the block (yields ``[count]``)."""
    calls = [0]

    def hook(*_: Any) -> None:
        calls[0] += 1

    handle = model.register_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


@contextmanager
def recording_drafts(student: Any, draft_tokens: int) -> Iterator[list[tuple[int, list[int]]]]:
    """Pin the student's drafting settings and record each draft it returns, then restore.

    Yields the list that receives ``(start, tokens)`` for every call of ``student.generate``
    (the candidate generator's only way to draft); the instance attribute that records them
    shadows the class's ``generate`` until the block ends.
    """
    config = student.generation_config
    saved = {name: getattr(config, name) for name in DRAFT_SETTINGS}
    config.num_assistant_tokens = draft_tokens
    config.num_assistant_tokens_schedule = "constant"
    config.assistant_confidence_threshold = 0.0
    drafts: list[tuple[int, list[int]]] = []
    generate = student.generate

    def recording_generate(*args: Any, **kwargs: Any) -> Any:
        output = generate(*args, **kwargs)
        prefix = kwargs.get("input_ids")
        if prefix is None or not hasattr(output, "sequences"):
            raise KDEvalError(
                "the installed transformers drafts in a way kd-eval cannot count (the "
                "assistant's generate got no input_ids or returned no sequences); use the "
                "transformers version pinned in ci/constraints.txt"
            )
        start = int(prefix.shape[-1])
        drafts.append((start, [int(t) for t in output.sequences[0, start:]]))
        return output

    student.generate = recording_generate
    try:
        with drop_log_messages("transformers.generation.utils", _INTERNAL_WARNING):
            yield drafts
    finally:
        del student.generate
        for name, value in saved.items():
            setattr(config, name, value)


def _generate(model: Any, ids: list[int], max_new_tokens: int, pad_id: int, **extra: Any) -> Any:
    prompt = torch.tensor([ids])
    return model.generate(
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=pad_id,
        **extra,
    )


@torch.no_grad()
def teacher_alone(teacher: Any, ids: list[int], max_new_tokens: int, pad_id: int) -> Generation:
    """Generate greedily with the teacher alone (the baseline), timed and counted."""
    with counting_forwards(teacher) as calls:
        begin = time.perf_counter()
        out = _generate(teacher, ids, max_new_tokens, pad_id)
        seconds = time.perf_counter() - begin
    return Generation([int(t) for t in out[0, len(ids) :]], calls[0], seconds)


@torch.no_grad()
def assisted(
    teacher: Any,
    student: Any,
    ids: list[int],
    max_new_tokens: int,
    pad_id: int,
    *,
    draft_tokens: int,
) -> AssistedGeneration:
    """Generate greedily with the teacher and ``student`` as its drafter, timed and counted.

    Args:
        teacher: the target model.
        student: the drafter (same vocabulary).
        ids: the prompt's token ids.
        max_new_tokens: the generation's length limit.
        pad_id: the pad token id passed to ``generate``.
        draft_tokens: ``K``, the tokens the student drafts per round.

    Raises:
        kd_eval.errors.KDEvalError: ``teacher`` and ``student`` are one object (their
            forwards and drafts could not be told apart).
    """
    if teacher is student:
        raise KDEvalError(
            "the teacher and the drafter are one model object, so their forwards cannot be "
            "counted apart; load the student separately (a second load_model of its directory)"
        )
    with recording_drafts(student, draft_tokens) as drafts, counting_forwards(teacher) as calls:
        begin = time.perf_counter()
        out = _generate(teacher, ids, max_new_tokens, pad_id, assistant_model=student)
        seconds = time.perf_counter() - begin
    sequence = [int(t) for t in out[0]]
    return AssistedGeneration(
        new_ids=sequence[len(ids) :],
        teacher_forwards=calls[0],
        seconds=seconds,
        proposed=sum(len(tokens) for _, tokens in drafts),
        accepted=accepted_tokens(drafts, sequence),
    )
