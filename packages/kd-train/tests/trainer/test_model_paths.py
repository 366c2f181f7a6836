"""Model and tokenizer paths in a run config: a directory or a .gguf file, else one clear line."""

from __future__ import annotations

import pytest
from kd_train.errors import KDTrainError
from kd_train.trainer.components import _require_model, load_student
from kd_train.trainer.config import StudentConfig


@pytest.mark.parametrize("key", ["teacher.path", "student.path"])
def test_a_path_that_is_neither_a_model_directory_nor_a_gguf_file_is_named(tmp_path, key):
    with pytest.raises(KDTrainError, match=rf"{key}: .*nope\.gguf is neither a directory nor a"):
        _require_model(str(tmp_path / "nope.gguf"), key)
    with pytest.raises(KDTrainError, match=r"neither a directory nor a \.gguf file"):
        _require_model(str(tmp_path / "missing-dir"), key)


def test_a_directory_with_no_model_in_it_is_named_not_a_traceback(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(KDTrainError, match=rf"student\.path: cannot load .* from '{tmp_path}'"):
        load_student(StudentConfig(path=str(tmp_path)), seed=0)


def test_a_tokenizer_directory_with_no_tokenizer_in_it_is_named(tmp_path):
    config = {"model_type": "llama", "vocab_size": 32, "hidden_size": 8}
    with pytest.raises(KDTrainError, match=r"student\.tokenizer: cannot load"):
        load_student(StudentConfig(config=config, tokenizer=str(tmp_path)), seed=0)
