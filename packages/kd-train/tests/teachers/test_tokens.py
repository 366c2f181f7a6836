"""Token strings as servers return them, mapped back to ids: byte-level BPE and SentencePiece.

Real tokenizers: the tiny teacher's byte-level BPE, and a SentencePiece-style BPE with byte
fallback trained here with ``tokenizers``.
"""

import random

import pytest
from kd_train.errors import KDTrainError
from kd_train.teachers.openai_api import Generation
from kd_train.teachers.tokens import (
    TokenMap,
    generation_topk,
    load_tokenizer,
    map_alternatives,
    tokenizer_family,
)
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

CORPUS = ["héllo wörld, the quick brown fox 😀 jumps", "naïve café ½ über"] * 20


@pytest.fixture(scope="module")
def byte_level(tiny_teacher_dir):
    return AutoTokenizer.from_pretrained(tiny_teacher_dir)


@pytest.fixture(scope="module")
def sentencepiece():
    """A Llama-2-style tokenizer: BPE over ``▁``-spaced text with byte fallback."""
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    bpe.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    bpe.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    bpe.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", *byte_tokens], show_progress=False
    )
    bpe.train_from_iterator(["héllo wörld the quick brown fox jumps naïve"] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>")


def test_families_are_told_from_the_decoder(byte_level, sentencepiece):
    assert tokenizer_family(byte_level) == "byte_level"
    assert tokenizer_family(sentencepiece) == "sentencepiece"


@pytest.mark.parametrize("text", [*CORPUS[:2], "\n\t  x", "日本語 and ✓"])
def test_byte_level_tokens_join_back_into_the_text(byte_level, text):
    tm = TokenMap.of(byte_level)
    ids = byte_level(text, add_special_tokens=False)["input_ids"]
    assert tm.joins(ids, text)
    assert not tm.joins(ids[:-1], text)


@pytest.mark.parametrize("text", ["😀 über ½", "x\n½"])
def test_sentencepiece_byte_fallback_tokens_join_back_into_the_text(sentencepiece, text):
    tm = TokenMap.of(sentencepiece)
    ids = sentencepiece(text, add_special_tokens=False)["input_ids"]
    assert any(p.startswith("<0x") for p in sentencepiece.convert_ids_to_tokens(ids))
    assert tm.joins(ids, " " + text)  # the leading ▁ is a space
    assert not tm.joins(ids, text)


def test_every_token_is_found_by_its_text_its_piece_and_its_bytes(byte_level):
    tm = TokenMap.of(byte_level)
    found = 0
    for token_id in range(len(byte_level)):
        raw = tm.token_bytes[token_id]
        assert raw is not None
        assert tm.lookup("", raw=list(raw)) == token_id
        assert tm.lookup(f"token_id:{token_id}") == token_id
        shown = raw.decode("utf-8", errors="ignore")  # as llama.cpp's server shows it
        if not tm.ambiguous(shown):
            assert tm.lookup(shown) == token_id
            found += 1
        piece = byte_level.convert_ids_to_tokens(token_id)
        if not tm.ambiguous(piece):
            assert tm.lookup(piece) == token_id
    assert found > len(byte_level) // 2


def test_a_partial_character_shows_as_empty_and_fits_several_ids(byte_level):
    tm = TokenMap.of(byte_level)
    partial = [
        i for i, raw in enumerate(tm.token_bytes) if raw and not raw.decode("utf-8", "ignore")
    ]
    assert len(partial) > 1
    assert tm.ambiguous("")
    assert tm.lookup("") is None


def test_sentencepiece_text_and_byte_tokens_map_to_their_ids(sentencepiece):
    tm = TokenMap.of(sentencepiece)
    vocab = sentencepiece.get_vocab()
    assert tm.lookup("\n") == vocab["<0x0A>"]
    assert tm.lookup(" the") == vocab["▁the"]
    assert tm.lookup("▁the") == vocab["▁the"]


def test_rows_with_fewer_than_k_or_unmappable_alternatives_are_never_shortened(byte_level):
    tm = TokenMap.of(byte_level)
    ids = byte_level(" the quick", add_special_tokens=False)["input_ids"]
    shown = [tm.token_bytes[i].decode() for i in ids]
    ok = map_alternatives(tm, [(shown[0], -0.5, None), (shown[1], -1.0, None)], 2)
    assert (ok.ids, ok.problem) == (ids[:2], None)
    short = map_alternatives(tm, [(shown[0], -0.5, None)], 2)
    assert (short.ids, short.problem) == ([], "1 alternatives, fewer than k=2")
    empty = map_alternatives(tm, [(shown[0], -0.5, None), ("", -1.0, None)], 2)
    assert empty.problem == "alternative '' fits several token ids"
    assert not empty.foreign
    foreign = map_alternatives(tm, [("zzzzqqqq", -0.5, None), (shown[0], -1.0, None)], 2)
    assert foreign.foreign


def test_a_generation_whose_tokens_do_not_join_into_its_text_is_marked(byte_level):
    tm = TokenMap.of(byte_level)
    ids = byte_level(" the quick brown", add_special_tokens=False)["input_ids"]
    names = [tm.token_bytes[i].decode() for i in ids]
    top = [[(n, -0.1), (names[0] if n != names[0] else names[1], -3.0)] for n in names]
    good = Generation(" the quick brown", names, top, None)
    mapped = generation_topk(tm, good, 2)
    assert (mapped.problem, mapped.chosen, [r[0] for r in mapped.ids]) == (None, ids, ids)
    bad = generation_topk(tm, Generation(" the quick fox", names, top, None), 2)
    assert bad.ids == []
    assert "do not join" in bad.problem["reason"]


def test_a_generation_with_an_empty_alternative_is_marked_with_its_position(byte_level):
    tm = TokenMap.of(byte_level)
    ids = byte_level(" the quick", add_special_tokens=False)["input_ids"]
    names = [tm.token_bytes[i].decode() for i in ids]
    top = [[(names[0], -0.1), (names[1], -2.0)], [(names[1], -0.1), ("", -2.0)]]
    mapped = generation_topk(tm, Generation(" the quick", names, top, None), 2)
    assert mapped.problem == {"positions": [1], "reason": "alternative '' fits several token ids"}
    assert mapped.chosen == ids


def test_a_bytes_field_resolves_an_empty_token(byte_level):
    tm = TokenMap.of(byte_level)
    ids = byte_level(" 😀", add_special_tokens=False)["input_ids"]
    raws = [list(tm.token_bytes[i]) for i in ids]
    names = [bytes(r).decode("utf-8", errors="ignore") for r in raws]
    assert "" in names  # the emoji is split into tokens holding part of it
    top = [[(n, -0.1)] for n in names]
    gen = Generation(" 😀", names, top, None, token_bytes=raws, top_bytes=[[r] for r in raws])
    mapped = generation_topk(tm, gen, 1)
    assert (mapped.problem, mapped.chosen) == (None, ids)


def test_a_token_of_another_tokenizer_is_refused(byte_level):
    tm = TokenMap.of(byte_level)
    gen = Generation("x", ["zzzzqqqq"], [[("zzzzqqqq", -0.1)]], None)
    with pytest.raises(KDTrainError, match="give the teacher's own tokenizer"):
        generation_topk(tm, gen, 1)


def test_random_id_sequences_round_trip_through_text_lookup(byte_level):
    tm = TokenMap.of(byte_level)
    rng = random.Random(0)
    for _ in range(50):
        ids = [rng.randrange(len(byte_level)) for _ in range(6)]
        shown = [tm.token_bytes[i].decode("utf-8", errors="ignore") for i in ids]
        back = [tm.lookup(s) for s in shown]
        for token_id, name, got in zip(ids, shown, back, strict=True):
            assert got == (None if tm.ambiguous(name) else token_id)


def test_a_tokenizer_name_that_is_no_local_path_is_refused_not_looked_up(tmp_path, monkeypatch):
    # "gpt2" would be a hub repository to from_pretrained; here it is a path that is not there.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(FileNotFoundError, match="no such file or directory: gpt2"):
        load_tokenizer("gpt2")


def test_a_tokenizer_directory_loads_from_disk(tmp_path, byte_level):
    byte_level.save_pretrained(tmp_path / "tok")
    assert load_tokenizer(tmp_path / "tok").get_vocab() == byte_level.get_vocab()
