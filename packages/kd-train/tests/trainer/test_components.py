"""``load_teacher`` with cached teachers: which cache serves train and eval batches."""

from types import SimpleNamespace

import pytest
import torch
from kd_train.commands.cache_logits import build_cache
from kd_train.data import collate, read_records
from kd_train.data.tokenization import TokenizeConfig
from kd_train.pipelines.toydata import tool_call_records, write_jsonl
from kd_train.teachers.cached import CachedTeacher, CacheError, CacheMismatchError
from kd_train.teachers.fingerprint import dataset_fingerprint, tokenizer_fingerprint
from kd_train.teachers.hf import HFTeacher
from kd_train.trainer.components import load_examples, load_teacher, require_cache_covers
from kd_train.trainer.config import DataConfig, TeacherConfig
from transformers import AutoTokenizer

K = 8
MAX_LENGTH = 48
CPU = torch.device("cpu")


def build(model_dir, data, out, k=K, max_length=MAX_LENGTH):
    build_cache(
        HFTeacher.from_pretrained(model_dir),
        list(read_records(data)),
        out,
        k=k,
        dataset_fingerprint=dataset_fingerprint(data),
        tokenize=TokenizeConfig(max_length=max_length),
        progress=False,
    )
    return str(out)


@pytest.fixture(scope="module")
def caches(tmp_path_factory, toy_train_file, tiny_teacher_dir, tiny_llama_dir):
    """Caches of the train file and of a separate eval file (and three wrong eval caches)."""
    root = tmp_path_factory.mktemp("caches")
    eval_file = write_jsonl(root / "eval.jsonl", tool_call_records(8, seed=9))
    return SimpleNamespace(
        eval_file=str(eval_file),
        train=build(tiny_teacher_dir, toy_train_file, root / "train"),
        eval=build(tiny_teacher_dir, eval_file, root / "eval"),
        eval_top4=build(tiny_teacher_dir, eval_file, root / "eval-top4", k=4),
        eval_other_teacher=build(tiny_llama_dir, eval_file, root / "eval-other"),
        train_short=build(tiny_teacher_dir, toy_train_file, root / "train-40", max_length=40),
    )


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def eval_batch(data, tokenizer):
    _, eval_set = load_examples(data, tokenizer)
    assert eval_set
    return collate(eval_set, int(tokenizer.pad_token_id))


def test_a_separate_eval_file_is_served_by_the_eval_cache(caches, tokenizer, toy_train_file):
    data = DataConfig(train=str(toy_train_file), eval=caches.eval_file, max_length=MAX_LENGTH)
    cfg = TeacherConfig(kind="cached", path=caches.train, eval_path=caches.eval)
    train_teacher, eval_teacher = load_teacher(cfg, CPU, tokenizer, data)
    batch = eval_batch(data, tokenizer)

    got = eval_teacher(batch)
    cache = CachedTeacher.open(
        caches.eval,
        tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
        dataset_fingerprint=dataset_fingerprint(caches.eval_file),
    )
    expected = cache.topk(batch.input_ids, batch.attention_mask, K)
    assert torch.equal(got.ids, expected.ids)
    assert torch.equal(got.logprobs, expected.logprobs)
    assert torch.equal(got.tail, expected.tail)
    with pytest.raises(CacheError, match="matches no sequence"):  # why the eval cache exists
        train_teacher(batch)


def test_records_held_out_of_the_train_file_are_served_by_the_train_cache(
    caches, tokenizer, toy_train_file
):
    data = DataConfig(train=str(toy_train_file), eval_fraction=0.2, max_length=MAX_LENGTH)
    train_teacher, eval_teacher = load_teacher(
        TeacherConfig(kind="cached", path=caches.train), CPU, tokenizer, data
    )
    assert eval_teacher is train_teacher
    batch = eval_batch(data, tokenizer)
    top = eval_teacher(batch)
    assert top.ids.shape == (*batch.input_ids.shape, K)


def test_an_eval_cache_of_another_dataset_is_refused_naming_the_key(
    caches, tokenizer, toy_train_file
):
    data = DataConfig(train=str(toy_train_file), eval=caches.eval_file, max_length=MAX_LENGTH)
    cfg = TeacherConfig(kind="cached", path=caches.train, eval_path=caches.train)
    with pytest.raises(CacheMismatchError, match=r"^teacher\.eval_path: .*another dataset"):
        load_teacher(cfg, CPU, tokenizer, data)


def test_an_eval_cache_of_another_teacher_is_refused(caches, tokenizer, toy_train_file):
    data = DataConfig(train=str(toy_train_file), eval=caches.eval_file, max_length=MAX_LENGTH)
    cfg = TeacherConfig(kind="cached", path=caches.train, eval_path=caches.eval_other_teacher)
    with pytest.raises(CacheMismatchError, match=r"made by another teacher than teacher\.path"):
        load_teacher(cfg, CPU, tokenizer, data)


def test_an_eval_cache_with_fewer_entries_than_training_reads_is_refused(
    caches, tokenizer, toy_train_file
):
    data = DataConfig(train=str(toy_train_file), eval=caches.eval_file, max_length=MAX_LENGTH)
    cfg = TeacherConfig(kind="cached", path=caches.train, eval_path=caches.eval_top4)
    with pytest.raises(
        CacheMismatchError, match=r"^teacher\.eval_path: .*holds top-4; cannot serve top-8"
    ):
        load_teacher(cfg, CPU, tokenizer, data)
    four = TeacherConfig(kind="cached", path=caches.train, topk=4, eval_path=caches.eval_top4)
    assert load_teacher(four, CPU, tokenizer, data)[1] is not None


def test_a_cache_tokenized_like_the_trainer_covers_every_example(caches, tokenizer, toy_train_file):
    data = DataConfig(train=str(toy_train_file), eval_fraction=0.0, max_length=MAX_LENGTH)
    teacher, _ = load_teacher(TeacherConfig(kind="cached", path=caches.train), CPU, tokenizer, data)
    train_set, _ = load_examples(data, tokenizer)
    require_cache_covers(teacher, train_set, "train", MAX_LENGTH)  # no error
    require_cache_covers(None, train_set, "train", MAX_LENGTH)  # CE-only run: nothing to check


@pytest.mark.parametrize(("cache_key", "data_max"), [("train_short", MAX_LENGTH), ("train", 40)])
def test_a_cache_tokenized_with_another_max_length_is_refused_before_training(
    caches, tokenizer, toy_train_file, cache_key, data_max
):
    # cache cut at 40 tokens, data at 48: the cache would leave positions to placeholders;
    # cache at 48, data cut at 40: the truncated sequences are not in the cache at all.
    data = DataConfig(train=str(toy_train_file), eval_fraction=0.0, max_length=data_max)
    path = getattr(caches, cache_key)
    teacher, _ = load_teacher(TeacherConfig(kind="cached", path=path), CPU, tokenizer, data)
    train_set, _ = load_examples(data, tokenizer)
    longer = sum(e.input_ids.numel() > 40 for e in load_examples(
        DataConfig(train=str(toy_train_file), eval_fraction=0.0, max_length=MAX_LENGTH),
        tokenizer)[0])  # fmt: skip
    assert longer > 0
    with pytest.raises(CacheMismatchError, match=rf"data.max_length={data_max}") as err:
        require_cache_covers(teacher, train_set, "train", data_max)
    assert f"{longer} of {len(train_set)} train examples" in str(err.value)
