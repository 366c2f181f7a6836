"""Load a saved ``transformers`` causal LM and its tokenizer, offline, with clear errors.

A model directory is what ``save_pretrained`` writes (``config.json``, weights, tokenizer
files). Loading never reaches a hub (``local_files_only=True``). The tokenizer must fit the
model: every token id the tokenizer can produce must be a row of the embedding
(``len(tokenizer) <= config.vocab_size``); a model may pad its vocabulary beyond that.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from kd_train.errors import KDTrainError
from kd_train.teachers.tokens import model_location
from kd_train.trainer import qat
from transformers import AutoModelForCausalLM, AutoTokenizer

from kd_eval.errors import ModelLoadError, VocabularyMismatchError


@dataclass
class LoadedModel:
    """A causal LM in eval mode, its tokenizer and where they came from.

    ``quantization`` is the QAT scheme of a QAT student (``"int8"``/``"int4"``), else None.
    """

    path: Path
    model: Any
    tokenizer: Any
    quantization: str | None = None

    @property
    def vocab_size(self) -> int:
        """Rows of the output embedding (``config.vocab_size``)."""
        return int(self.model.config.vocab_size)

    @property
    def parameters(self) -> int:
        """Number of parameters of the model."""
        return count_parameters(self.model)


def count_parameters(model: torch.nn.Module) -> int:
    """Return the number of parameters of ``model`` (shared tensors counted once).

    >>> import torch
    >>> from kd_eval.loading.models import count_parameters
    >>> count_parameters(torch.nn.Linear(3, 2))
    8
    """
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def load_model(path: str | Path, *, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load the model and tokenizer saved in ``path`` (offline) and check that they fit.

    Args:
        path: a directory written by ``save_pretrained`` (model and tokenizer), or a
            model's ``.gguf`` file (a teacher as llama.cpp serves it; its tokenizer inside).
        dtype: the dtype the weights are loaded in.

    Returns:
        The model in eval mode and its tokenizer, given the EOS token as pad token when it
        had none.

    Raises:
        ModelLoadError: the directory is missing, has no ``config.json``, or cannot be loaded
            (for a QAT student: its ``quantization.json`` is malformed, or torchao is missing).
        VocabularyMismatchError: the tokenizer has more tokens than the model's vocabulary.
    """
    directory, gguf_file = model_location(path)
    if gguf_file is not None:
        if not Path(path).is_file():
            raise ModelLoadError(f"GGUF file {path} does not exist; pass the model's .gguf file")
    elif not directory.is_dir():
        raise ModelLoadError(
            f"model directory {directory} does not exist; pass the directory written by "
            "save_pretrained (it holds config.json and the weights) or a model's .gguf file"
        )
    elif not (directory / "config.json").is_file():
        raise ModelLoadError(
            f"{directory} has no config.json, so it is not a saved transformers model; "
            "pass the directory written by save_pretrained"
        )
    options: dict[str, Any] = {"local_files_only": True, "gguf_file": gguf_file}
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, **options)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(
            f"cannot load the tokenizer from {path}: {exc}; save the tokenizer next to "
            "the model with tokenizer.save_pretrained"
        ) from exc
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, **options)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load the model from {path}: {exc}") from exc
    try:
        record = qat.load_fake_quantized(model, directory)
    except KDTrainError as exc:  # a bad quantization.json, or no torchao
        raise ModelLoadError(f"cannot load the QAT student {directory}: {exc}") from exc
    model.eval()
    check_tokenizer_fits(path, len(tokenizer), int(model.config.vocab_size))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(Path(path), model, tokenizer, None if record is None else record.scheme)


def check_tokenizer_fits(where: Path | str, tokenizer_size: int, model_vocab: int) -> None:
    """Raise if a tokenizer of ``tokenizer_size`` tokens can emit ids the model lacks.

    >>> from kd_eval.loading.models import check_tokenizer_fits
    >>> check_tokenizer_fits("m", 300, 320)
    >>> check_tokenizer_fits("m", 400, 320)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    kd_eval.errors.VocabularyMismatchError: m: the tokenizer has 400 tokens but ... 320 rows; ...
    """
    if tokenizer_size > model_vocab:
        raise VocabularyMismatchError(
            f"{where}: the tokenizer has {tokenizer_size} tokens but the model's vocabulary "
            f"has {model_vocab} rows; the tokenizer does not belong to this model "
            "(save the model and its own tokenizer together)"
        )


def check_same_vocabulary(teacher: LoadedModel, student: LoadedModel) -> None:
    """Raise unless teacher and student share one vocabulary (size and token -> id map).

    Raises:
        VocabularyMismatchError: naming both sizes, or the first token whose id differs.
    """
    if teacher.vocab_size != student.vocab_size:
        raise VocabularyMismatchError(
            f"teacher {teacher.path} has a vocabulary of {teacher.vocab_size} tokens but "
            f"student {student.path} has {student.vocab_size}; fidelity and the drafter "
            "compare the two models token by token, so both must use the same tokenizer"
        )
    t_vocab = teacher.tokenizer.get_vocab()
    s_vocab = student.tokenizer.get_vocab()
    if t_vocab != s_vocab:
        differing = sorted(set(t_vocab.items()) ^ set(s_vocab.items()))[0][0]
        raise VocabularyMismatchError(
            f"teacher {teacher.path} and student {student.path} have tokenizers of the same "
            f"size that map tokens differently (first difference: {differing!r}); "
            "use the teacher's tokenizer for the student"
        )
