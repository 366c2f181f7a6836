"""Records become ids, masked labels, span masks and teacher top-k at the label positions."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from kd_train.data.schema import SPAN_KINDS, KDRecord, Span, TeacherTopK
from kd_train.data.tokenization import (
    IGNORE_INDEX,
    SequenceTooLongError,
    TokenizationError,
    TokenizationReport,
    TokenizeConfig,
    encode_record,
    encode_records,
    span_token_mask,
)
from transformers import AutoTokenizer

CONFIG = TokenizeConfig(max_length=128)


@pytest.fixture(scope="module")
def tok(tiny_llama_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def ids_of(tok: Any, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def offsets_of(tok: Any, text: str) -> list[tuple[int, int]]:
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return [tuple(o) for o in enc["offset_mapping"]]


def topk_for(n: int, k: int = 2) -> TeacherTopK:
    return TeacherTopK([[t, t + 1] for t in range(n)], [[-0.1 * t, -5.0] for t in range(n)])


def test_input_is_bos_prompt_completion_eos(tok: Any) -> None:
    ex = encode_record(KDRecord("a", "Ask again", " It is certain."), tok, CONFIG)
    expected = [tok.bos_token_id, *ids_of(tok, "Ask again"), *ids_of(tok, " It is certain.")]
    assert ex.input_ids.tolist() == [*expected, tok.eos_token_id]
    assert ex.input_ids.dtype == torch.int64


def test_labels_are_masked_on_bos_and_prompt_and_keep_completion_and_eos(tok: Any) -> None:
    ex = encode_record(KDRecord("a", "Ask again", " It is certain."), tok, CONFIG)
    head = 1 + len(ids_of(tok, "Ask again"))
    assert (ex.labels[:head] == IGNORE_INDEX).all()
    assert ex.labels[head:].tolist() == ex.input_ids[head:].tolist()
    assert ex.labels[-1].item() == tok.eos_token_id


def test_without_bos_and_eos(tok: Any) -> None:
    config = TokenizeConfig(max_length=64, add_bos=False, add_eos=False)
    ex = encode_record(KDRecord("a", "Q", "ok"), tok, config)
    assert ex.input_ids.tolist() == ids_of(tok, "Q") + ids_of(tok, "ok")


def test_span_mask_holds_exactly_the_tokens_overlapping_the_span(tok: Any) -> None:
    completion = 'Call the tool get_weather with {"city": "Paris"}'
    start = completion.index("get_weather")
    end = start + len("get_weather") - 2  # ends inside a token on purpose
    rec = KDRecord("a", "Weather?", completion, spans=[Span("tool_name", start, end)])
    ex = encode_record(rec, tok, CONFIG)
    head = 1 + len(ids_of(tok, "Weather?"))
    offsets = offsets_of(tok, completion)
    expected = [a < end and start < b for a, b in offsets]
    assert ex.span_masks["tool_name"][head : head + len(offsets)].tolist() == expected
    assert not ex.span_masks["tool_name"][:head].any()
    assert not ex.span_masks["tool_name"][-1]  # eos
    covered = [i for i, inside in enumerate(expected) if inside]
    assert offsets[covered[0]][0] <= start
    assert offsets[covered[-1]][1] >= end


def test_every_kind_has_a_mask_and_unused_kinds_are_empty(tok: Any) -> None:
    ex = encode_record(KDRecord("a", "", "x", spans=[Span("code_mode", 0, 1)]), tok, CONFIG)
    assert set(ex.span_masks) == set(SPAN_KINDS)
    assert ex.span_masks["code_mode"].sum().item() == 1
    assert all(not ex.span_masks[k].any() for k in SPAN_KINDS if k != "code_mode")


def test_span_over_the_whole_completion_covers_completion_tokens_only(tok: Any) -> None:
    completion = "def add(a, b): return a + b"
    rec = KDRecord("a", "Code:", completion, spans=[Span("code_mode", 0, len(completion))])
    ex = encode_record(rec, tok, CONFIG)
    completion_positions = (ex.labels != IGNORE_INDEX) & (ex.input_ids != tok.eos_token_id)
    assert ex.span_masks["code_mode"].tolist() == completion_positions.tolist()


def test_multibyte_character_split_over_byte_tokens_is_wholly_in_the_span(tok: Any) -> None:
    completion = "héllo 🙂 wörld"
    emoji = completion.index("🙂")
    rec = KDRecord(
        "a",
        "",
        completion,
        spans=[Span("integration", emoji, emoji + 1), Span("json_args", 1, 2)],
    )
    ex = encode_record(rec, tok, CONFIG)
    offsets = offsets_of(tok, completion)
    emoji_tokens = [i for i, (a, b) in enumerate(offsets) if (a, b) == (emoji, emoji + 1)]
    assert len(emoji_tokens) >= 2  # 4 UTF-8 bytes, unknown to the tiny vocabulary
    mask = ex.span_masks["integration"][1 : 1 + len(offsets)]
    assert [i for i, m in enumerate(mask.tolist()) if m] == emoji_tokens
    e_acute = ex.span_masks["json_args"][1 : 1 + len(offsets)]
    assert [i for i, m in enumerate(e_acute.tolist()) if m] == [
        i for i, (a, b) in enumerate(offsets) if (a, b) == (1, 2)
    ]


def test_span_token_mask_rule_at_boundaries() -> None:
    offsets = torch.tensor([[0, 2], [2, 4], [4, 6]])
    assert span_token_mask(offsets, 2, 4).tolist() == [False, True, False]
    assert span_token_mask(offsets, 1, 5).tolist() == [True, True, True]
    assert span_token_mask(offsets, 4, 6).tolist() == [False, False, True]


def test_teacher_topk_sits_at_the_completion_label_positions(tok: Any) -> None:
    completion = "Very doubtful."
    n = len(ids_of(tok, completion))
    rec = KDRecord("a", "8-ball:", completion, teacher_topk=topk_for(n))
    ex = encode_record(rec, tok, CONFIG)
    assert ex.teacher_ids is not None
    assert ex.teacher_logprobs is not None
    assert ex.teacher_mask is not None
    head = 1 + len(ids_of(tok, "8-ball:"))
    assert ex.teacher_ids.shape == (len(ex.input_ids), 2)
    assert (ex.teacher_ids.dtype, ex.teacher_logprobs.dtype) == (torch.int64, torch.float32)
    assert ex.teacher_ids[head : head + n].tolist() == topk_for(n).ids
    assert ex.teacher_mask.tolist() == [False] * head + [True] * n + [False]
    assert (ex.teacher_ids[~ex.teacher_mask] == 0).all()
    assert torch.allclose(ex.teacher_logprobs[head + 1, 0], torch.tensor(-0.1))


def test_teacher_topk_extra_row_sits_at_the_eos(tok: Any) -> None:
    completion = "Very doubtful."
    n = len(ids_of(tok, completion))
    rec = KDRecord("a", "8-ball:", completion, teacher_topk=topk_for(n + 1))
    ex = encode_record(rec, tok, CONFIG)
    assert ex.teacher_mask is not None
    assert ex.teacher_ids is not None
    head = 1 + len(ids_of(tok, "8-ball:"))
    assert ex.teacher_mask.tolist() == [False] * head + [True] * (n + 1)
    assert ex.teacher_ids[head + n].tolist() == topk_for(n + 1).ids[n]


@pytest.mark.parametrize("extra", [-1, 2])
def test_teacher_topk_length_mismatch_is_a_clear_error(tok: Any, extra: int) -> None:
    completion = "Very doubtful."
    n = len(ids_of(tok, completion))
    rec = KDRecord("rec-7", "", completion, teacher_topk=topk_for(n + extra))
    with pytest.raises(
        TokenizationError, match=rf"'rec-7': teacher_topk has {n + extra} positions"
    ):
        encode_record(rec, tok, CONFIG)


def long_record(tok: Any, with_topk: bool = False) -> KDRecord:
    completion = "The quick brown fox jumps over the lazy dog." * 3
    topk = topk_for(len(ids_of(tok, completion))) if with_topk else None
    spans = [Span("integration", 0, len(completion))]
    return KDRecord("long", "Story:", completion, teacher_topk=topk, spans=spans)


def test_truncate_keeps_the_prompt_and_cuts_the_completion_tail(tok: Any) -> None:
    config = TokenizeConfig(max_length=20, truncation="truncate")
    ex = encode_record(long_record(tok, with_topk=True), tok, config)
    assert ex.truncated
    assert len(ex.input_ids) == 20
    head = 1 + len(ids_of(tok, "Story:"))
    full = ids_of(tok, long_record(tok).completion)
    assert ex.input_ids[head:].tolist() == full[: 20 - head]  # no eos on a cut sequence
    assert ex.teacher_ids is not None
    assert ex.teacher_ids[head:, 0].tolist() == list(range(20 - head))
    assert ex.span_masks["integration"][head:].all()


def test_record_that_fits_is_not_truncated(tok: Any) -> None:
    ex = encode_record(long_record(tok), tok, CONFIG)
    assert not ex.truncated
    assert ex.input_ids[-1].item() == tok.eos_token_id


def test_prompt_filling_max_length_is_an_error_even_when_truncating(tok: Any) -> None:
    config = TokenizeConfig(max_length=3, truncation="truncate")
    rec = KDRecord("p", "The quick brown fox", "x")
    with pytest.raises(SequenceTooLongError, match="no room for the completion"):
        encode_record(rec, tok, config)


def test_error_policy_raises_naming_the_record_and_lengths(tok: Any) -> None:
    config = TokenizeConfig(max_length=20, truncation="error")
    with pytest.raises(SequenceTooLongError, match=r"record 'long': \d+ tokens .* max_length 20"):
        encode_record(long_record(tok), tok, config)


def test_drop_policy_skips_and_reports_the_record(
    tok: Any, caplog: pytest.LogCaptureFixture
) -> None:
    config = TokenizeConfig(max_length=20, truncation="drop")
    report = TokenizationReport()
    records = [KDRecord("short", "Q", "ok"), long_record(tok)]
    with caplog.at_level(logging.WARNING, logger="kd_train.data.tokenization"):
        examples = list(encode_records(records, tok, config, report))
    assert [e.record_id for e in examples] == ["short"]
    assert (report.seen, report.encoded, report.dropped) == (2, 1, ["long"])
    assert "record 'long'" in caplog.text
    assert report.summary() == "2 records: 1 encoded (0 truncated), 1 dropped as too long"


def test_encode_records_reports_truncated_records(tok: Any) -> None:
    report = TokenizationReport()
    config = TokenizeConfig(max_length=20)
    examples = list(encode_records([long_record(tok)], tok, config, report))
    assert [e.truncated for e in examples] == [True]
    assert report.truncated == ["long"]


def test_encode_records_raises_under_the_error_policy(tok: Any) -> None:
    config = TokenizeConfig(max_length=20, truncation="error")
    with pytest.raises(SequenceTooLongError):
        list(encode_records([long_record(tok)], tok, config))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"max_length": 1}, "max_length must be >= 2"), ({"truncation": "cut"}, "truncation")],
)
def test_config_is_validated(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TokenizeConfig(**kwargs)
