"""Fixtures of the kd-eval tests: eval sets on disk and exported tiny models."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from kd_eval.tasks.labels import MAGIC_8_BALL_ANSWERS
from kd_train.data.jsonl import write_records
from kd_train.data.schema import KDRecord
from kd_train.testing import tiny_llama_config, train_tiny_tokenizer
from transformers import LlamaForCausalLM

WriteSet = Callable[[Sequence[KDRecord]], Path]


@pytest.fixture
def write_set(tmp_path: Path) -> WriteSet:
    """Write records as a JSONL eval set in tmp_path and return its path."""

    def write(records: Sequence[KDRecord]) -> Path:
        path = tmp_path / f"eval-{len(list(tmp_path.iterdir()))}.jsonl"
        write_records(path, records)
        return path

    return write


@pytest.fixture
def eightball_records() -> list[KDRecord]:
    """Six 8-ball questions whose completions are labels of the classic set."""
    return [
        KDRecord(id=f"q{i}", prompt=f"Question {i}: will it work? Answer:", completion=answer)
        for i, answer in enumerate(MAGIC_8_BALL_ANSWERS[::4][:6])
    ]


@pytest.fixture(scope="session")
def mismatched_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose vocabulary (200 rows) is smaller than its tokenizer (320 tokens)."""
    out = tmp_path_factory.mktemp("mismatched")
    tokenizer = train_tiny_tokenizer()
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(200)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def small_vocab_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model and tokenizer that fit each other but have a smaller vocabulary (300)."""
    from kd_train.testing import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("small-vocab"), seed=2, vocab_size=300)


class TinyLM(torch.nn.Module):
    """A causal toy LM: cumulative sum of embeddings, then a linear head (int32 inputs)."""

    def __init__(self, vocab: int = 50, width: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(vocab, width)
        self.head = torch.nn.Linear(width, vocab)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(input_ids.long()) * attention_mask.unsqueeze(-1).float()
        return self.head(torch.cumsum(h, dim=1))


def export_onnx(module: torch.nn.Module, path: Path, input_names: Sequence[str]) -> Path:
    """Export ``module`` to ONNX (dynamo) with dynamic batch and sequence axes."""
    # Two distinct tensors: the exporter treats one tensor passed twice as one input.
    ids = torch.arange(1, 5, dtype=torch.int32)[None]
    mask = torch.ones((1, 4), dtype=torch.int32)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    torch.onnx.export(
        module,
        (ids, mask),
        str(path),
        dynamo=True,
        input_names=list(input_names),
        output_names=["logits"],
        dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}),
    )
    return path


@pytest.fixture(scope="session")
def tiny_lm() -> type[TinyLM]:
    """The :class:`TinyLM` class (same seed, same weights every time it is built)."""
    return TinyLM


@pytest.fixture(scope="session")
def onnx_exporter() -> Callable[[torch.nn.Module, Path, Sequence[str]], Path]:
    """The :func:`export_onnx` helper."""
    return export_onnx


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:class:`TinyLM` exported to ONNX with int32 ``input_ids``/``attention_mask``."""
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_onnx(TinyLM().eval(), out, ["input_ids", "attention_mask"])


@pytest.fixture(scope="session")
def tiny_torchscript(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:class:`TinyLM` traced to TorchScript."""
    out = tmp_path_factory.mktemp("ts") / "tiny.pt"
    ids = torch.arange(1, 5, dtype=torch.int32)[None]
    mask = torch.ones((1, 4), dtype=torch.int32)
    torch.jit.trace(TinyLM().eval(), (ids, mask)).save(str(out))
    return out
