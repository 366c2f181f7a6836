import json

import pytest
from kd_train.data.schema import KDRecord
from kd_train.errors import KDTrainError
from kd_train.teachers.fingerprint import (
    dataset_fingerprint,
    records_fingerprint,
    tokenizer_fingerprint,
    weights_fingerprint,
)
from kd_train.testing import save_tiny_llama, train_tiny_tokenizer
from transformers import AutoTokenizer


def test_tokenizer_fingerprint_survives_save_and_load(tiny_llama_dir, tiny_teacher_dir):
    student = AutoTokenizer.from_pretrained(tiny_llama_dir)
    teacher = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    assert tokenizer_fingerprint(student) == tokenizer_fingerprint(teacher)
    assert tokenizer_fingerprint(student).startswith("sha256:")


def test_tokenizer_fingerprint_differs_for_another_vocabulary():
    a = train_tiny_tokenizer(vocab_size=300)
    b = train_tiny_tokenizer(corpus=["completely different text only"], vocab_size=300)
    assert tokenizer_fingerprint(a) != tokenizer_fingerprint(b)


def test_tokenizer_fingerprint_differs_when_a_special_token_changes():
    a = train_tiny_tokenizer(vocab_size=300)
    b = train_tiny_tokenizer(vocab_size=300)
    b.eos_token = "<pad>"
    assert tokenizer_fingerprint(a) != tokenizer_fingerprint(b)


def test_tokenizer_fingerprint_ignores_runtime_padding_and_truncation():
    tok = train_tiny_tokenizer(vocab_size=300)
    before = tokenizer_fingerprint(tok)
    tok.backend_tokenizer.enable_padding(pad_id=3, pad_token="<pad>")
    tok.backend_tokenizer.enable_truncation(max_length=7)
    assert tokenizer_fingerprint(tok) == before


def test_dataset_fingerprint_changes_with_one_byte(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "a"}\n')
    before = dataset_fingerprint(path)
    path.write_text('{"id": "b"}\n')
    assert dataset_fingerprint(path) != before


def test_records_fingerprint_ignores_json_formatting_but_not_order():
    rows = [
        {"id": "1", "prompt": "p", "completion": "c"},
        {"completion": "d", "prompt": "q", "id": "2"},
    ]
    reformatted = [json.loads(json.dumps(r, indent=3, sort_keys=True)) for r in rows]
    records = [KDRecord.from_dict(r) for r in rows]
    same = [KDRecord.from_dict(r) for r in reformatted]
    assert records_fingerprint(records) == records_fingerprint(same)
    assert records_fingerprint(records) != records_fingerprint(records[::-1])


def test_weights_fingerprint_is_the_same_for_the_same_weights(tmp_path):
    a = save_tiny_llama(tmp_path / "a", seed=3, hidden_size=16, num_layers=1)
    b = save_tiny_llama(tmp_path / "b", seed=3, hidden_size=16, num_layers=1)
    c = save_tiny_llama(tmp_path / "c", seed=4, hidden_size=16, num_layers=1)
    assert weights_fingerprint(a) == weights_fingerprint(b)
    assert weights_fingerprint(a) != weights_fingerprint(c)


def test_weights_fingerprint_of_a_directory_without_weights_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(KDTrainError, match="no weight file"):
        weights_fingerprint(tmp_path)


def test_a_gguf_file_is_fingerprinted_alone_as_weights_and_as_tokenizer(tmp_path):
    from kd_train.teachers.fingerprint import tokenizer_files_fingerprint, weights_fingerprint

    (tmp_path / "model.gguf").write_bytes(b"GGUF one")
    (tmp_path / "other.gguf").write_bytes(b"GGUF two")
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "model.gguf").write_bytes(b"GGUF one")
    # the file alone: the same as a directory holding only it, whatever its neighbours
    assert weights_fingerprint(tmp_path / "model.gguf") == weights_fingerprint(alone)
    assert weights_fingerprint(tmp_path / "model.gguf") != weights_fingerprint(tmp_path)
    before = tokenizer_files_fingerprint(tmp_path / "model.gguf")
    assert before != tokenizer_files_fingerprint(tmp_path / "other.gguf")
    (tmp_path / "model.gguf").write_bytes(b"GGUF one, changed")
    assert tokenizer_files_fingerprint(tmp_path / "model.gguf") != before
