import shutil
from pathlib import Path

import pytest
import torch
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


def test_a_qat_student_is_loaded_fake_quantized_as_it_was_trained(tiny_llama_dir, tmp_path):
    pytest.importorskip("torchao", reason="QAT students need the qat extra (torchao)")
    from kd_train.trainer.qat import prepare_qat, quantization_record, write_quantization
    from kd_train.trainer.train_config import QATConfig

    student = tmp_path / "qat-student"
    shutil.copytree(tiny_llama_dir, student)
    float_model = load_model(student)
    prepare_qat(float_model.model, QATConfig(scheme="int8"))
    write_quantization(student, quantization_record(float_model.model, QATConfig(scheme="int8")))
    loaded = load_model(student)
    ids = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        expected = float_model.model(ids).logits
        plain = load_model(tiny_llama_dir).model(ids).logits
        got = loaded.model(ids).logits
    assert loaded.quantization == "int8"
    assert load_model(tiny_llama_dir).quantization is None
    assert torch.equal(got, expected)
    assert not torch.equal(got, plain)


def test_a_malformed_quantization_record_is_a_load_error_naming_it(tiny_llama_dir, tmp_path):
    student = tmp_path / "qat-student"
    shutil.copytree(tiny_llama_dir, student)
    (student / "quantization.json").write_text('{"format": "kd-quantization/1", "scheme": "fp8"}')
    with pytest.raises(ModelLoadError, match=r"quantization\.json: scheme: 'fp8' is not allowed"):
        load_model(student)
