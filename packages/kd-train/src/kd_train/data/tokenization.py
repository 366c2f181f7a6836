"""Turn KD records into causal-LM inputs: token ids, masked labels, span masks, teacher top-k.

For a record, with a ``transformers`` fast tokenizer (prompt and completion are tokenized
separately, without special tokens, so the boundary between them is a token boundary)::

    input_ids = [bos] + prompt_tokens + completion_tokens + [eos]      length T
    labels    = [-100] * (1 + len(prompt_tokens)) + completion_tokens + [eos]

``bos``/``eos`` are added when :class:`TokenizeConfig` says so and the tokenizer has them.

**Labels are not shifted.** ``labels[t]`` is the token *at* position ``t``, as in
``transformers``: the model's ``logits[t - 1]`` predict it.
:mod:`kd_train.data.batching` describes the aligned pairs
``(logits[:, :-1], labels[:, 1:], span_masks[:, 1:], teacher[:, 1:])`` that the losses take.
Everything per-token in an :class:`Example` (span masks, teacher top-k) sits at the same
positions as ``labels``.

**Spans.** A completion token belongs to a span ``[start, end)`` (characters of the
completion) when its character range ``[a, b)`` from the tokenizer's ``offset_mapping``
overlaps it: ``a < end and start < b``. A token cut through by a span boundary is therefore
inside the span, and a multi-byte character split over several byte tokens puts all of
them in. Prompt, ``bos``, ``eos`` and padding positions are in no span.

**Teacher top-k.** ``teacher_topk`` rows are per completion token: the record must have
as many rows as the completion has tokens with this tokenizer, or one more: the teacher's
distribution of the ``eos`` that ends the completion (a clear :class:`TokenizationError`
otherwise). Row ``i`` goes to the position of completion token ``i``, the extra row to
the ``eos`` (ids ``int64 [T, k]``, log-probs ``float32 [T, k]``); ``teacher_mask`` is true
there. Without the extra row, or when ``eos`` is not added (not configured, or the
completion was cut), the ``eos`` position has no teacher row.

**Truncation** (``max_length``), by ``TokenizeConfig.truncation``:
``"truncate"`` keeps the prompt and cuts the end of the completion (no ``eos`` is added to
a cut sequence; the example is marked ``truncated``), and raises
:class:`SequenceTooLongError` when the prompt leaves no room for one completion token;
``"drop"`` skips a record that does not fit; ``"error"`` raises. :func:`encode_records`
counts truncated and dropped records in a :class:`TokenizationReport` and logs them:
nothing is dropped silently.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from kd_train.data.schema import SPAN_KINDS, KDRecord
from kd_train.errors import KDTrainError

logger = logging.getLogger(__name__)

#: Label value ignored by the losses (prompt, padding).
IGNORE_INDEX = -100

#: What to do with a record longer than ``max_length`` tokens.
Truncation = Literal["truncate", "drop", "error"]


class TokenizationError(KDTrainError):
    """A record cannot be turned into model inputs as asked (names the record id)."""


class SequenceTooLongError(TokenizationError):
    """A record does not fit in ``max_length`` tokens under the chosen truncation policy."""


@dataclass(frozen=True)
class TokenizeConfig:
    """How records become model inputs.

    Args:
        max_length: most tokens per example (``bos`` and ``eos`` included), ``>= 2``.
        truncation: ``"truncate"``, ``"drop"`` or ``"error"`` (see the module docstring).
        add_bos: put the tokenizer's ``bos`` token first (when it has one).
        add_eos: put the tokenizer's ``eos`` token last (when it has one), learned as a label.

    Raises:
        ValueError: ``max_length < 2`` or an unknown ``truncation``.
    """

    max_length: int = 2048
    truncation: Truncation = "truncate"
    add_bos: bool = True
    add_eos: bool = True

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")
        if self.truncation not in ("truncate", "drop", "error"):
            raise ValueError(
                f"truncation must be 'truncate', 'drop' or 'error', got {self.truncation!r}"
            )


@dataclass(frozen=True)
class Example:
    """One tokenized record; every tensor is ``[T]`` (or ``[T, k]``) with unshifted positions.

    Attributes:
        record_id: the record's ``id``.
        input_ids: ``int64 [T]``.
        labels: ``int64 [T]``; :data:`~kd_train.data.tokenization.IGNORE_INDEX` on ``bos``
            and the prompt.
        span_masks: one ``bool [T]`` per kind in :data:`~kd_train.data.schema.SPAN_KINDS`.
        teacher_ids: ``int64 [T, k]`` teacher top-k ids (0 where ``teacher_mask`` is false),
            or ``None`` when the record has no ``teacher_topk``.
        teacher_logprobs: ``float32 [T, k]`` (0 where ``teacher_mask`` is false), or ``None``.
        teacher_mask: ``bool [T]``, true at completion tokens that have a top-k row, or ``None``.
        truncated: the completion was cut to fit ``max_length``.
    """

    record_id: str
    input_ids: torch.Tensor
    labels: torch.Tensor
    span_masks: dict[str, torch.Tensor]
    teacher_ids: torch.Tensor | None = None
    teacher_logprobs: torch.Tensor | None = None
    teacher_mask: torch.Tensor | None = None
    truncated: bool = False


def span_token_mask(offsets: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """Return which tokens overlap the character range ``[start, end)``, ``bool [n]``.

    ``offsets`` is ``int64 [n, 2]`` (each token's ``[a, b)``); the rule is
    ``a < end and start < b``.

    >>> import torch
    >>> from kd_train.data.tokenization import span_token_mask
    >>> offsets = torch.tensor([[0, 2], [2, 5], [5, 6]])
    >>> span_token_mask(offsets, 3, 5).tolist()
    [False, True, False]
    >>> span_token_mask(offsets, 1, 3).tolist()
    [True, True, False]
    """
    return (offsets[:, 0] < end) & (offsets[:, 1] > start)


def tokenize_completion(text: str, tokenizer: Any) -> tuple[list[int], torch.Tensor]:
    """Tokenise a completion as :func:`encode_record` does: ``(ids, offsets int64 [n, 2])``.

    No special tokens; ``offsets`` are each token's ``[a, b)`` characters of ``text``. A
    cross-tokenizer run tokenises the same completion with both tokenizers this way and
    aligns the two by these offsets (:mod:`kd_train.data.alignment`).

    >>> from kd_train.data.tokenization import tokenize_completion
    >>> from kd_train.testing import train_tiny_tokenizer
    >>> ids, offsets = tokenize_completion("hé", train_tiny_tokenizer())
    >>> offsets.tolist()  # "é" is two byte-level tokens, both on character 1
    [[0, 1], [1, 2], [1, 2]]
    """
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = torch.tensor(enc["offset_mapping"], dtype=torch.int64).reshape(-1, 2)
    return list(enc["input_ids"]), offsets


def _special(tokenizer: Any, name: str, wanted: bool) -> list[int]:
    token_id = getattr(tokenizer, name, None)
    return [int(token_id)] if wanted and token_id is not None else []


def encode_record(record: KDRecord, tokenizer: Any, config: TokenizeConfig) -> Example:
    """Tokenize one record (see the module docstring for the layout and rules).

    Args:
        record: a validated record.
        tokenizer: a ``transformers`` fast tokenizer (``return_offsets_mapping`` support).
        config: lengths and special tokens.

    Returns:
        The example, ``T <= config.max_length``.

    Raises:
        SequenceTooLongError: the record does not fit and the policy is ``"error"`` or
            ``"drop"``, or the prompt alone leaves no room for a completion token.
        TokenizationError: ``teacher_topk`` rows do not match the completion's token count.

    >>> from kd_train.data.schema import KDRecord, Span
    >>> from kd_train.data.tokenization import TokenizeConfig, encode_record
    >>> from kd_train.testing import train_tiny_tokenizer
    >>> tok = train_tiny_tokenizer()
    >>> rec = KDRecord("r1", "Q: ", "get_weather", spans=[Span("tool_name", 0, 11)])
    >>> ex = encode_record(rec, tok, TokenizeConfig(max_length=64))
    >>> n_prompt = 1 + len(tok("Q: ", add_special_tokens=False)["input_ids"])
    >>> bool((ex.labels[:n_prompt] == -100).all()), int(ex.labels[-1]) == tok.eos_token_id
    (True, True)
    >>> ex.span_masks["tool_name"][n_prompt:-1].all().item()
    True
    """
    bos = _special(tokenizer, "bos_token_id", config.add_bos)
    eos = _special(tokenizer, "eos_token_id", config.add_eos)
    prompt_ids = list(tokenizer(record.prompt, add_special_tokens=False)["input_ids"])
    completion_ids, offsets = tokenize_completion(record.completion, tokenizer)
    head = len(bos) + len(prompt_ids)
    total = head + len(completion_ids) + len(eos)
    rows = _teacher_rows(record, len(completion_ids))
    truncated = total > config.max_length
    if truncated:
        room = config.max_length - head
        if config.truncation != "truncate" or room < 1:
            raise SequenceTooLongError(
                f"record {record.id!r}: {total} tokens (prompt {head}, completion "
                f"{len(completion_ids)}{' + eos' if eos else ''}) exceed max_length "
                f"{config.max_length} under truncation={config.truncation!r}"
                + ("; the prompt leaves no room for the completion" if room < 1 else "")
                + ": raise max_length, shorten the record, or choose another policy"
            )
        completion_ids, offsets, eos = completion_ids[:room], offsets[:room], []
    ids = bos + prompt_ids + completion_ids + eos
    n = len(ids)
    labels = torch.tensor(ids, dtype=torch.int64)
    labels[:head] = IGNORE_INDEX
    stop = head + len(completion_ids)
    span_masks = {kind: torch.zeros(n, dtype=torch.bool) for kind in SPAN_KINDS}
    for span in record.spans:
        span_masks[span.kind][head:stop] |= span_token_mask(offsets, span.start, span.end)
    input_ids = torch.tensor(ids, dtype=torch.int64)
    if rows is None:
        return Example(record.id, input_ids, labels, span_masks, truncated=truncated)
    ids_k, logprobs_k = rows
    k = ids_k.shape[1]
    teacher_ids = torch.zeros(n, k, dtype=torch.int64)
    teacher_logprobs = torch.zeros(n, k, dtype=torch.float32)
    if eos and ids_k.shape[0] > len(completion_ids):  # the extra row is the eos's
        stop += 1
    teacher_ids[head:stop] = ids_k[: stop - head]
    teacher_logprobs[head:stop] = logprobs_k[: stop - head]
    teacher_mask = torch.zeros(n, dtype=torch.bool)
    teacher_mask[head:stop] = True
    return Example(
        record.id,
        input_ids,
        labels,
        span_masks,
        teacher_ids,
        teacher_logprobs,
        teacher_mask,
        truncated,
    )


def _teacher_rows(record: KDRecord, n_tokens: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    if record.teacher_topk is None:
        return None
    ids, logprobs = record.teacher_topk.ids, record.teacher_topk.logprobs
    if len(ids) not in (n_tokens, n_tokens + 1):
        raise TokenizationError(
            f"record {record.id!r}: teacher_topk has {len(ids)} positions but the completion "
            f"has {n_tokens} tokens with this tokenizer; expected one row per completion "
            "token, optionally one more for eos (was the top-k made with another tokenizer?)"
        )
    return torch.tensor(ids, dtype=torch.int64), torch.tensor(logprobs, dtype=torch.float32)


@dataclass
class TokenizationReport:
    """What :func:`encode_records` did: ``seen == encoded + dropped``.

    Attributes:
        seen: records read.
        encoded: examples produced (truncated ones included).
        truncated: ids of records whose completion was cut.
        dropped: ids of records skipped under ``truncation="drop"``.
    """

    seen: int = 0
    encoded: int = 0
    truncated: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Return a one-line summary.

        >>> from kd_train.data.tokenization import TokenizationReport
        >>> TokenizationReport(seen=3, encoded=2, dropped=["c"]).summary()
        '3 records: 2 encoded (0 truncated), 1 dropped as too long'
        """
        return (
            f"{self.seen} records: {self.encoded} encoded ({len(self.truncated)} truncated), "
            f"{len(self.dropped)} dropped as too long"
        )


def encode_records(
    records: Iterable[KDRecord],
    tokenizer: Any,
    config: TokenizeConfig,
    report: TokenizationReport | None = None,
) -> Iterator[Example]:
    """Tokenize records lazily, counting truncated and dropped ones in ``report``.

    Raises:
        SequenceTooLongError: under ``truncation="error"`` (or a prompt that fills
            ``max_length``).
        TokenizationError: a ``teacher_topk`` that does not match the completion.
    """
    report = report if report is not None else TokenizationReport()
    for record in records:
        report.seen += 1
        try:
            example = encode_record(record, tokenizer, config)
        except SequenceTooLongError as exc:
            if config.truncation != "drop":
                raise
            report.dropped.append(record.id)
            logger.warning("dropped: %s", exc)
            continue
        report.encoded += 1
        if example.truncated:
            report.truncated.append(record.id)
            logger.info("truncated record %r to %d tokens", record.id, config.max_length)
        yield example
