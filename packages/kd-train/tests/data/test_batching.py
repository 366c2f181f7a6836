"""Collation pads on the right; the next-token view pairs each prediction with its target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kd_train.data.batching import collate
from kd_train.data.schema import KDRecord, Span, TeacherTopK
from kd_train.data.tokenization import (
    IGNORE_INDEX,
    TokenizationError,
    TokenizeConfig,
    encode_record,
)
from transformers import AutoTokenizer

CONFIG = TokenizeConfig(max_length=64)


@pytest.fixture(scope="module")
def tok(tiny_llama_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def n_tokens(tok: Any, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


def examples(tok: Any, with_topk: bool = True) -> list[Any]:
    long = 'Call the tool get_weather with {"city": "Paris"}'
    topk = TeacherTopK([[4, 5]] * n_tokens(tok, long), [[-0.2, -2.0]] * n_tokens(tok, long))
    records = [
        KDRecord(
            "a",
            "Q:",
            long,
            teacher_topk=topk if with_topk else None,
            spans=[Span("tool_name", 14, 25)],
        ),
        KDRecord("b", "Q:", "It is certain."),
    ]
    return [encode_record(r, tok, CONFIG) for r in records]


def test_collate_pads_right_with_attention_mask(tok: Any) -> None:
    exs = examples(tok)
    batch = collate(exs, pad_token_id=tok.pad_token_id)
    long_len, short_len = len(exs[0].input_ids), len(exs[1].input_ids)
    assert batch.input_ids.shape == (2, long_len)
    assert batch.record_ids == ["a", "b"]
    assert batch.attention_mask[1].tolist() == [1] * short_len + [0] * (long_len - short_len)
    assert (batch.input_ids[1, short_len:] == tok.pad_token_id).all()
    assert (batch.labels[1, short_len:] == IGNORE_INDEX).all()
    assert batch.input_ids[1, :short_len].tolist() == exs[1].input_ids.tolist()
    assert not batch.span_masks["tool_name"][1].any()
    assert batch.span_masks["tool_name"][0].tolist() == exs[0].span_masks["tool_name"].tolist()


def test_collate_fills_teacher_rows_of_examples_without_topk(tok: Any) -> None:
    batch = collate(examples(tok), pad_token_id=tok.pad_token_id)
    assert batch.teacher_ids is not None
    assert batch.teacher_mask is not None
    assert batch.teacher_logprobs is not None
    assert batch.teacher_ids.shape == (*batch.input_ids.shape, 2)
    assert not batch.teacher_mask[1].any()
    assert batch.teacher_mask[0].sum().item() == n_tokens(
        tok, 'Call the tool get_weather with {"city": "Paris"}'
    )


def test_collate_without_any_topk_has_no_teacher_tensors(tok: Any) -> None:
    batch = collate(examples(tok, with_topk=False), pad_token_id=tok.pad_token_id)
    assert (batch.teacher_ids, batch.teacher_logprobs, batch.teacher_mask) == (None, None, None)


def test_collate_rounds_length_up_to_a_multiple(tok: Any) -> None:
    batch = collate(examples(tok), pad_token_id=0, pad_to_multiple_of=16)
    assert batch.input_ids.shape[1] % 16 == 0
    assert batch.input_ids.shape[1] >= len(examples(tok)[0].input_ids)


def test_collate_refuses_different_k(tok: Any) -> None:
    rec = KDRecord(
        "c",
        "",
        "ok",
        teacher_topk=TeacherTopK([[1]] * n_tokens(tok, "ok"), [[-0.1]] * n_tokens(tok, "ok")),
    )
    with pytest.raises(TokenizationError, match=r"different k \[1, 2\]"):
        collate([*examples(tok), encode_record(rec, tok, CONFIG)], pad_token_id=0)


def test_collate_refuses_an_empty_batch() -> None:
    with pytest.raises(ValueError, match="at least one example"):
        collate([], pad_token_id=0)


def test_batch_moves_to_a_device(tok: Any) -> None:
    batch = collate(examples(tok), pad_token_id=0).to("cpu")
    assert batch.input_ids.device.type == "cpu"
    assert batch.teacher_mask is not None
