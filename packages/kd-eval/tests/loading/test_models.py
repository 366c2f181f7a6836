from pathlib import Path

import pytest
from kd_eval.errors import ModelLoadError, VocabularyMismatchError
from kd_eval.loading.models import check_same_vocabulary, count_parameters, load_model


def test_missing_directory_is_named(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ModelLoadError, match=f"{missing} does not exist"):
        load_model(missing)


def test_directory_without_config_is_not_a_model(tmp_path):
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_model(tmp_path)


def test_directory_without_tokenizer_is_rejected(tmp_path, tiny_llama_dir):
    (tmp_path / "config.json").write_bytes((Path(tiny_llama_dir) / "config.json").read_bytes())
    with pytest.raises(ModelLoadError, match="cannot load the tokenizer"):
        load_model(tmp_path)


def test_tokenizer_larger_than_model_vocabulary_is_a_mismatch(mismatched_model_dir):
    with pytest.raises(VocabularyMismatchError, match=r"320 tokens .* 200 rows"):
        load_model(mismatched_model_dir)


def test_loaded_model_is_in_eval_mode_with_a_pad_token(tiny_llama_dir):
    loaded = load_model(tiny_llama_dir)
    assert not loaded.model.training
    assert loaded.tokenizer.pad_token_id is not None
    assert loaded.parameters == count_parameters(loaded.model) > 0


def test_teacher_and_student_with_different_vocab_sizes_name_both(
    tiny_teacher_dir, small_vocab_model_dir
):
    teacher, student = load_model(tiny_teacher_dir), load_model(small_vocab_model_dir)
    with pytest.raises(VocabularyMismatchError) as info:
        check_same_vocabulary(teacher, student)
    assert f"{teacher.vocab_size} tokens" in str(info.value)
    assert f"has {student.vocab_size}" in str(info.value)


def test_teacher_and_student_sharing_a_tokenizer_pass(tiny_teacher_dir, tiny_llama_dir):
    check_same_vocabulary(load_model(tiny_teacher_dir), load_model(tiny_llama_dir))
