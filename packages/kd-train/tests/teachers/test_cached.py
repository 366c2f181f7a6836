import json
import shutil

import pytest
import torch
from kd_train.commands.cache_logits import build_cache, encode_for_cache
from kd_train.data.jsonl import write_records
from kd_train.data.schema import KDRecord
from kd_train.data.tokenization import TokenizeConfig
from kd_train.teachers.base import Teacher
from kd_train.teachers.cached import (
    MANIFEST,
    PARTIAL_MANIFEST,
    CachedTeacher,
    CacheError,
    CacheMismatchError,
    CorruptShardError,
    IncompleteCacheError,
    Manifest,
    ids_dtype_for,
    read_manifest,
    topk_with_tail,
    truncate_topk,
)
from kd_train.teachers.fingerprint import (
    dataset_fingerprint,
    tokenizer_fingerprint,
)
from kd_train.teachers.hf import HFTeacher
from kd_train.testing import train_tiny_tokenizer
from safetensors import safe_open

K = 8
# fp16 keeps 11 significant bits: round-to-nearest is off by at most 2^-11 of the value.
FP16_RTOL = 2.0**-11
# Float32 noise between a padded batch and a lone sequence.
FLOAT32_ATOL = 1e-5

RECORDS = [
    KDRecord(f"r{i}", f"Q{i}: what is {i} + {i}?", f" It is {2 * i}. The quick brown fox.")
    for i in range(12)
]


@pytest.fixture(scope="module")
def teacher(tiny_teacher_dir):
    return HFTeacher.from_pretrained(tiny_teacher_dir)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    write_records(path, RECORDS)
    return path


@pytest.fixture(scope="module")
def cache_dir(teacher, dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "cache"
    build_cache(
        teacher,
        RECORDS,
        out,
        k=K,
        dataset_fingerprint=dataset_fingerprint(dataset),
        shard_size=5,
        batch_size=4,
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def cached(cache_dir, teacher, dataset):
    return CachedTeacher.open(
        cache_dir,
        tokenizer_fingerprint=tokenizer_fingerprint(teacher.tokenizer),
        dataset_fingerprint=dataset_fingerprint(dataset),
    )


@pytest.fixture
def copy_of_cache(cache_dir, tmp_path):
    return shutil.copytree(cache_dir, tmp_path / "cache")


def open_cache(path, teacher, dataset):
    return CachedTeacher.open(
        path,
        tokenizer_fingerprint=tokenizer_fingerprint(teacher.tokenizer),
        dataset_fingerprint=dataset_fingerprint(dataset),
    )


def live_rows(teacher, record):
    tokens, start = encode_for_cache(teacher.tokenizer, record, TokenizeConfig())
    ids = torch.tensor([tokens])
    full = teacher.log_probs(ids, torch.ones_like(ids))[0, start : len(tokens) - 1]
    return tokens, start, full


def test_cached_teacher_is_a_teacher(cached):
    assert isinstance(cached, Teacher)
    assert (cached.vocab_size, cached.k) == (320, K)


def test_round_trip_equals_the_live_teacher_within_fp16_precision(cached, teacher):
    for record in RECORDS:
        _, _, full = live_rows(teacher, record)
        expected = torch.topk(full, K, dim=-1)
        got = cached.for_record(record.id)
        assert torch.equal(got.ids[0], expected.indices)
        error = (got.logprobs[0] - expected.values).abs()
        assert bool((error <= FP16_RTOL * expected.values.abs() + FLOAT32_ATOL).all())


def test_cached_tail_is_the_exact_mass_outside_the_top_k(cached, teacher):
    _, _, full = live_rows(teacher, RECORDS[3])
    top = torch.topk(full, K, dim=-1)
    rest = full.scatter(-1, top.indices, float("-inf"))
    expected = torch.logsumexp(rest, dim=-1)
    got = cached.for_record(RECORDS[3].id).tail_logprob()[0]
    assert bool(((got - expected).abs() <= FP16_RTOL * expected.abs() + FLOAT32_ATOL).all())


def test_rows_cover_every_completion_token_and_eos(cached, teacher):
    for record in RECORDS:
        completion = teacher.tokenizer(record.completion, add_special_tokens=False)["input_ids"]
        assert cached.for_record(record.id).ids.shape == (1, len(completion) + 1, K)


def test_batch_lookup_places_rows_at_their_positions(cached, teacher):
    encoded = [encode_for_cache(teacher.tokenizer, r, TokenizeConfig()) for r in RECORDS[:3]]
    width = max(len(tokens) for tokens, _ in encoded) + 2
    input_ids = torch.full((3, width), teacher.tokenizer.pad_token_id)
    mask = torch.zeros_like(input_ids)
    for b, (tokens, _) in enumerate(encoded):
        input_ids[b, : len(tokens)] = torch.tensor(tokens)
        mask[b, : len(tokens)] = 1
    got = cached.topk(input_ids, mask, K)
    assert got.ids.shape == (3, width, K)
    for b, (record, (_, start)) in enumerate(zip(RECORDS[:3], encoded, strict=True)):
        rows = cached.for_record(record.id)
        n = rows.ids.shape[1]
        assert torch.equal(got.ids[b, start : start + n], rows.ids[0])
        assert torch.equal(got.logprobs[b, start : start + n], rows.logprobs[0])
        assert torch.equal(got.tail_logprob()[b, start : start + n], rows.tail[0])


def test_batch_lookup_fills_uncached_positions_with_a_valid_placeholder(cached, teacher):
    tokens, start = encode_for_cache(teacher.tokenizer, RECORDS[0], TokenizeConfig())
    ids = torch.tensor([tokens])
    got = cached.topk(ids, torch.ones_like(ids), 4)
    mass = got.logprobs[0, :start].exp().sum(-1) + got.tail_logprob()[0, :start].exp()
    torch.testing.assert_close(mass, torch.ones(start))
    assert torch.equal(got.ids[0, 0], torch.arange(4))


def test_holds_only_a_cached_sequence_whole(cached, teacher):
    tokens = torch.tensor(encode_for_cache(teacher.tokenizer, RECORDS[0], TokenizeConfig())[0])
    assert cached.holds(tokens)
    assert not cached.holds(tokens[:-1])  # cut short: its last position has no row
    assert not cached.holds(torch.cat([tokens, tokens[-1:]]))  # longer than cached


def test_smaller_k_moves_the_dropped_entries_into_the_tail(cached):
    full = cached.for_record("r5")
    small = truncate_topk(full, 3)
    assert torch.equal(small.ids, full.ids[..., :3])
    before = full.logprobs.exp().sum(-1) + full.tail.exp()
    after = small.logprobs.exp().sum(-1) + small.tail.exp()
    torch.testing.assert_close(after, before)


def test_batch_row_that_matches_no_record_is_refused(cached):
    ids = torch.tensor([[1, 200, 201, 202]])
    with pytest.raises(CacheError, match="row 0 of the batch"):
        cached.topk(ids, torch.ones_like(ids), K)


def test_unknown_record_id_is_refused(cached):
    with pytest.raises(CacheError, match="record 'nope' is not in cache"):
        cached.for_record("nope")


def test_k_larger_than_the_cached_k_is_refused(cached):
    ids = torch.tensor([[1, 2]])
    with pytest.raises(CacheError, match=f"holds top-{K}; cannot serve k={K + 1}"):
        cached.topk(ids, torch.ones_like(ids), K + 1)


def test_cache_made_with_another_tokenizer_is_refused_naming_both(cache_dir, dataset):
    ours = tokenizer_fingerprint(train_tiny_tokenizer(vocab_size=300))
    theirs = read_manifest(cache_dir).config.tokenizer_fingerprint
    with pytest.raises(CacheMismatchError, match="another tokenizer") as err:
        CachedTeacher.open(
            cache_dir, tokenizer_fingerprint=ours, dataset_fingerprint=dataset_fingerprint(dataset)
        )
    assert ours in str(err.value)
    assert theirs in str(err.value)


def test_cache_made_from_another_dataset_is_refused(cache_dir, teacher, tmp_path):
    other = tmp_path / "other.jsonl"
    write_records(other, RECORDS[:2])
    with pytest.raises(CacheMismatchError, match="another dataset"):
        open_cache(cache_dir, teacher, other)


def test_tampered_shard_is_refused_naming_the_file(copy_of_cache, teacher, dataset):
    shard = copy_of_cache / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptShardError, match=r"shard-00001\.safetensors is corrupted"):
        open_cache(copy_of_cache, teacher, dataset)


def test_missing_shard_is_refused_naming_the_file(copy_of_cache, teacher, dataset):
    (copy_of_cache / "shard-00002.safetensors").unlink()
    with pytest.raises(CorruptShardError, match=r"shard-00002\.safetensors is missing"):
        open_cache(copy_of_cache, teacher, dataset)


def test_cache_without_manifest_is_reported_incomplete(copy_of_cache, teacher, dataset):
    manifest = read_manifest(copy_of_cache)
    manifest.shards = manifest.shards[:1]
    manifest.write(copy_of_cache, PARTIAL_MANIFEST)
    (copy_of_cache / MANIFEST).unlink()
    with pytest.raises(IncompleteCacheError, match="incomplete: 1 shard"):
        open_cache(copy_of_cache, teacher, dataset)


def test_directory_without_any_manifest_is_not_a_cache(tmp_path, teacher, dataset):
    with pytest.raises(IncompleteCacheError, match="not a finished kd-train logits cache"):
        open_cache(tmp_path, teacher, dataset)


def test_manifest_of_another_format_is_refused(copy_of_cache, teacher, dataset):
    body = json.loads((copy_of_cache / MANIFEST).read_text())
    body["format"] = "kd-topk-cache/0"
    (copy_of_cache / MANIFEST).write_text(json.dumps(body))
    with pytest.raises(CacheError, match="is not 'kd-topk-cache/1'"):
        open_cache(copy_of_cache, teacher, dataset)


def test_manifest_holds_fingerprints_and_shard_hashes(cache_dir, teacher, dataset):
    manifest = Manifest.read(cache_dir / MANIFEST)
    assert manifest.config.teacher_fingerprint == teacher.fingerprint
    assert manifest.config.dataset_fingerprint == dataset_fingerprint(dataset)
    assert [s.file for s in manifest.shards] == [f"shard-0000{i}.safetensors" for i in range(3)]
    assert list(manifest.records) == [r.id for r in RECORDS]
    assert {r.shard for r in manifest.records.values()} == {0, 1, 2}


def test_bytes_per_token_is_within_4k_plus_8_on_disk(teacher, dataset, tmp_path):
    out = tmp_path / "one-shard"
    fingerprint = dataset_fingerprint(dataset)
    manifest = build_cache(
        teacher, RECORDS, out, k=K, dataset_fingerprint=fingerprint, progress=False
    )
    on_disk = sum(p.stat().st_size for p in out.glob("shard-*.safetensors"))
    assert on_disk / manifest.positions <= 4 * K + 8
    assert manifest.bytes_per_token == on_disk / manifest.positions


def test_ids_are_stored_in_16_bits_when_the_vocabulary_fits(cache_dir):
    with safe_open(cache_dir / "shard-00000.safetensors", framework="pt") as shard:
        assert shard.get_tensor("ids").dtype == torch.uint16
        assert shard.get_tensor("logprobs").dtype == torch.float16
        assert shard.get_tensor("tail").dtype == torch.float16
    assert ids_dtype_for(65_536) == "uint16"
    assert ids_dtype_for(65_537) == "int32"


def test_topk_with_tail_of_a_full_top_k_has_no_tail():
    logp = torch.log_softmax(torch.tensor([[2.0, 1.0, 0.5]]), dim=-1)
    top = topk_with_tail(logp, 3)
    assert top.tail_logprob().item() == float("-inf")
    torch.testing.assert_close(top.logprobs.exp().sum(), torch.tensor(1.0))


def test_manifest_that_is_not_json_is_refused_naming_it(copy_of_cache, teacher, dataset):
    (copy_of_cache / MANIFEST).write_text('{"format": "kd-topk-cache/1", "con')
    with pytest.raises(CacheError, match=r"manifest\.json: not a valid cache manifest"):
        open_cache(copy_of_cache, teacher, dataset)
