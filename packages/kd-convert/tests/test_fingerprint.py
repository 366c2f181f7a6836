from kd_convert.fingerprint import hash_tree, source_fingerprint, tokenizer_fingerprint
from kd_train.teachers.fingerprint import tokenizer_fingerprint as kd_train_fingerprint
from transformers import AutoTokenizer


def test_tokenizer_fingerprint_is_kd_trains(tiny_llama_dir):
    expected = kd_train_fingerprint(AutoTokenizer.from_pretrained(tiny_llama_dir))
    assert tokenizer_fingerprint(tiny_llama_dir) == expected


def test_a_model_without_tokenizer_has_no_fingerprint(tmp_path):
    assert tokenizer_fingerprint(tmp_path) is None


def test_source_fingerprint_covers_config_and_weights(tiny_llama_dir):
    assert set(source_fingerprint(tiny_llama_dir)) == {"config.json", "model.safetensors"}


def test_hash_tree_walks_directories_and_skips_excluded(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.bin").write_bytes(b"a")
    (tmp_path / "contract.json").write_text("{}", encoding="utf-8")
    assert list(hash_tree(tmp_path, exclude=("contract.json",))) == ["pkg/a.bin"]
