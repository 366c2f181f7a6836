from __future__ import annotations

import pytest
from kd_train.data.schema import Span
from kd_train.losses import span_mask_tensors, span_token_masks
from transformers import AutoTokenizer


def test_spans_map_to_the_tokens_they_overlap_with_a_real_tokenizer(tiny_llama_dir) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    prompt = "Q: weather? A: "
    completion = 'Call get_weather with {"city": "Paris"}.'
    enc = tok(prompt + completion, return_offsets_mapping=True)
    name_start = completion.index("get_weather")
    args_start = completion.index("{")
    spans = [
        Span("tool_name", name_start, name_start + len("get_weather")),
        Span("json_args", args_start, len(completion) - 1),
    ]
    masks = span_token_masks(enc["offset_mapping"], spans, char_offset=len(prompt))
    ids = enc["input_ids"]
    name_ids = [i for i, m in zip(ids, masks["tool_name"], strict=True) if m]
    args_ids = [i for i, m in zip(ids, masks["json_args"], strict=True) if m]
    assert "get_weather" in tok.decode(name_ids)
    assert tok.decode(args_ids).strip().startswith("{")
    assert "Call" not in tok.decode(name_ids)
    assert not any(masks["integration"])


def test_straddling_token_is_inside_and_special_tokens_are_not() -> None:
    offsets = [(0, 0), (0, 3), (3, 6), (6, 9)]
    masks = span_token_masks(offsets, [Span("integration", 4, 5)], kinds=["integration"])
    assert masks["integration"] == [False, False, True, False]


def test_unknown_kind_raises() -> None:
    with pytest.raises(ValueError, match=r"span kind 'tool' is not one of"):
        span_token_masks([(0, 1)], [Span("tool", 0, 1)])


def test_empty_span_raises() -> None:
    with pytest.raises(ValueError, match=r"has start 2 >= end 2"):
        span_token_masks([(0, 1)], [Span("tool_name", 2, 2)])


def test_tensors_are_right_padded_and_truncated() -> None:
    out = span_mask_tensors([{"code_mode": [True, True, True]}], 2, ["code_mode"])
    assert out["code_mode"].tolist() == [[True, True]]


def test_tokens_ending_at_the_start_or_starting_at_the_end_are_outside() -> None:
    offsets = [(0, 4), (4, 5), (5, 9), (9, 10)]
    masks = span_token_masks(offsets, [Span("tool_name", 4, 9)], char_offset=0)
    assert masks["tool_name"] == [False, True, True, False]


def test_a_zero_width_token_inside_a_span_is_not_marked() -> None:
    offsets = [(0, 2), (2, 4), (3, 3), (4, 6)]
    masks = span_token_masks(offsets, [Span("json_args", 1, 5)], kinds=["json_args"])
    assert masks["json_args"] == [True, True, False, True]
