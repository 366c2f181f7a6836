"""Character-offset alignment of two tokenisations, and the one-to-one vocabulary map."""

import pytest
import torch
from kd_train.data import KDRecord, TokenizeConfig, encode_record
from kd_train.data.alignment import align_examples, align_offsets, boundaries
from kd_train.data.tokenization import tokenize_completion
from kd_train.data.vocab_map import build_vocab_map, token_texts
from kd_train.models import train_tokenizer
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

TRICKY = [
    "héllo  wörld 😀\n\n  x",  # multi-byte characters, a 4-byte emoji, whitespace runs
    "the cat é  a\t\tz",
    "   leading spaces and trailing   ",
    "ünïcödé ñ 日本語 テスト",
    "a\n\n\n\nb",
]


def sentencepiece_tokenizer() -> PreTrainedTokenizerFast:
    """A SentencePiece-style BPE ("▁" for spaces) that falls back to <0xNN> byte tokens."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab |= {f"<0x{b:02X}>": 3 + b for b in range(256)}
    for c in "▁abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
    merges = [("▁", "t"), ("h", "e"), ("▁t", "he"), ("▁", "a"), ("l", "l")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab, merges, byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


@pytest.fixture(scope="module")
def byte_level():
    return train_tokenizer(vocab_size=300)


@pytest.fixture(scope="module")
def spm():
    return sentencepiece_tokenizer()


def test_boundaries_never_fall_inside_a_character():
    # "é" as two byte tokens, both reporting the character 1..2.
    assert boundaries([(0, 1), (1, 2), (1, 2), (2, 3)]) == [(1, 1), (3, 2), (4, 3)]


def test_groups_close_where_both_cuts_agree():
    student = [(0, 3), (3, 6)]
    teacher = [(0, 2), (2, 4), (4, 6)]
    assert align_offsets(student, teacher) == [((0, 2), (0, 3))]


@pytest.mark.parametrize("text", TRICKY)
def test_byte_level_and_byte_fallback_tokenisations_align_over_the_whole_text(
    text, byte_level, spm
):
    s_ids, s_off = tokenize_completion(text, byte_level)
    t_ids, t_off = tokenize_completion(text, spm)
    assert s_ids
    assert t_ids
    groups = align_offsets(s_off.tolist(), t_off.tolist())
    # The groups tile both token sequences, in order, with nothing left over.
    assert [g[0][0] for g in groups] == [0] + [g[0][1] for g in groups[:-1]]
    assert [g[1][0] for g in groups] == [0] + [g[1][1] for g in groups[:-1]]
    assert (groups[-1][0][1], groups[-1][1][1]) == (len(s_ids), len(t_ids))
    for (s0, s1), (t0, t1) in groups:
        # Both sides of a group end at the same character: they spell the same text.
        assert int(s_off[s0:s1, 1].max()) == int(t_off[t0:t1, 1].max())
    # The byte tokens of one character are never split over two groups.
    group_of = {i: n for n, ((a, b), _) in enumerate(groups) for i in range(a, b)}
    for i in range(len(s_ids) - 1):
        if s_off[i].tolist() == s_off[i + 1].tolist():
            assert group_of[i] == group_of[i + 1]


def test_byte_fallback_tokens_of_one_character_stay_together(spm, byte_level):
    text = "xé"
    t_ids, t_off = tokenize_completion(text, spm)
    assert spm.convert_ids_to_tokens(t_ids)[-2:] == ["<0xC3>", "<0xA9>"]
    s_ids, s_off = tokenize_completion(text, byte_level)
    groups = align_offsets(s_off.tolist(), t_off.tolist())
    last_student, last_teacher = groups[-1]
    assert last_teacher[1] - last_teacher[0] >= 2  # both byte tokens of "é"
    assert last_student[1] == len(s_ids)


def test_the_eos_tokens_of_both_sides_form_the_last_group(byte_level, spm):
    record = KDRecord("r", "Q: ", "the cat")
    cfg = TokenizeConfig(max_length=64)
    s, t = encode_record(record, byte_level, cfg), encode_record(record, spm, cfg)
    aligned = align_examples(
        s,
        tokenize_completion(record.completion, byte_level)[1],
        t,
        tokenize_completion(record.completion, spm)[1],
        student_eos=byte_level.eos_token_id,
        teacher_eos=spm.eos_token_id,
    )
    assert aligned.unaligned == 0
    s0, s1, t0, t1 = aligned.groups[-1].tolist()
    assert (s1 - s0, t1 - t0) == (1, 1)
    assert int(s.input_ids[s0]) == byte_level.eos_token_id
    assert int(t.input_ids[t0]) == spm.eos_token_id
    # The first group starts at the first completion label on both sides.
    assert int(aligned.groups[0, 0]) == int((s.labels != -100).nonzero()[0])
    assert int(aligned.groups[0, 2]) == int((t.labels != -100).nonzero()[0])


def test_a_completion_cut_on_one_side_leaves_counted_unaligned_tokens(byte_level, spm):
    record = KDRecord("r", "Q: ", "the cat sat on the mat")
    s = encode_record(record, byte_level, TokenizeConfig(max_length=64))
    t = encode_record(record, spm, TokenizeConfig(max_length=8))  # the teacher's is cut
    aligned = align_examples(
        s,
        tokenize_completion(record.completion, byte_level)[1],
        t,
        tokenize_completion(record.completion, spm)[1],
        student_eos=byte_level.eos_token_id,
        teacher_eos=spm.eos_token_id,
    )
    n_completion = int((s.labels != -100).sum())
    covered = sum(b - a for a, b in aligned.groups[:, :2].tolist())
    assert aligned.unaligned == n_completion - covered > 0
    assert t.truncated
    assert int(aligned.groups[:, 3].max()) <= t.input_ids.shape[0]


def test_token_texts_read_every_spelling_as_bytes(byte_level, spm):
    s_text, t_text = token_texts(byte_level), token_texts(spm)
    assert s_text[byte_level.convert_tokens_to_ids("Ġ")] == b" "
    assert s_text[byte_level.convert_tokens_to_ids("Ċ")] == b"\n"
    assert t_text[spm.convert_tokens_to_ids("▁the")] == b" the"
    assert t_text[spm.convert_tokens_to_ids("<0xC3>")] == b"\xc3"
    assert t_text[spm.eos_token_id] == "</s>"  # special: by content, never as text


def test_the_vocab_map_pairs_ids_with_the_same_bytes_one_to_one(byte_level, spm):
    pairs = build_vocab_map(byte_level, spm)
    mapped = dict(zip(pairs.teacher.tolist(), pairs.student.tolist(), strict=True))
    space_s = byte_level.convert_tokens_to_ids("Ġ")
    assert mapped[spm.convert_tokens_to_ids("▁")] == space_s  # not "<0x20>", the same byte
    assert spm.convert_tokens_to_ids("<0x20>") not in mapped
    assert mapped[spm.convert_tokens_to_ids("<0xC3>")] == byte_level.convert_tokens_to_ids("Ã")
    assert mapped[spm.eos_token_id] == byte_level.eos_token_id
    assert mapped[spm.convert_tokens_to_ids("a")] == byte_level.convert_tokens_to_ids("a")
    assert len(set(mapped.values())) == len(mapped)  # one to one
    s_text, t_text = token_texts(byte_level), token_texts(spm)
    assert all(s_text[s] == t_text[t] for t, s in mapped.items() if t != spm.eos_token_id)
    assert torch.equal(pairs.teacher, pairs.teacher.sort().values)


def test_a_group_that_nothing_predicts_is_left_out_and_counted(byte_level, spm):
    record = KDRecord("r", "", "the cat")
    cfg = TokenizeConfig(max_length=64, add_bos=False)  # the completion starts at position 0
    s, t = encode_record(record, byte_level, cfg), encode_record(record, spm, cfg)
    aligned = align_examples(
        s,
        tokenize_completion(record.completion, byte_level)[1],
        t,
        tokenize_completion(record.completion, spm)[1],
        student_eos=byte_level.eos_token_id,
        teacher_eos=spm.eos_token_id,
    )
    assert bool((aligned.groups[:, 0] > 0).all())
    assert bool((aligned.groups[:, 2] > 0).all())
    first = align_offsets(
        tokenize_completion(record.completion, byte_level)[1].tolist(),
        tokenize_completion(record.completion, spm)[1].tolist(),
    )[0]
    assert aligned.unaligned == first[0][1] - first[0][0]
