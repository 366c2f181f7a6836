"""A small tool-call dataset and a run config factory over the session's tiny models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from kd_train.pipelines.toydata import tool_call_records, write_jsonl
from transformers import AutoModelForCausalLM


@pytest.fixture(scope="session")
def toy_train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("toy-data") / "train.jsonl", tool_call_records(40))


@pytest.fixture
def make_config(tiny_llama_dir, tiny_teacher_dir, toy_train_file, tmp_path):
    """Return a function building a run-config dict; keyword sections are merged in."""

    def make(**sections: Any) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "student": {"path": str(tiny_llama_dir)},
            "teacher": {"kind": "hf", "path": str(tiny_teacher_dir)},
            "data": {"train": str(toy_train_file), "eval_fraction": 0.2, "max_length": 48},
            "loss": {"weights": {"kd": 1.0, "ce": 0.5}},
            "optim": {"lr": 3e-3, "warmup_steps": 2},
            "train": {"max_steps": 6, "batch_size": 4, "threads": 1},
            "output_dir": str(tmp_path / "run"),
        }
        for name, value in sections.items():
            if isinstance(value, dict) and isinstance(cfg.get(name), dict):
                cfg[name] = {**cfg[name], **value}
            else:
                cfg[name] = value
        return cfg

    return make


@pytest.fixture
def trained(tiny_llama_dir: Path) -> tuple[Any, torch.optim.Optimizer]:
    """A student after one AdamW step, and its optimiser."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(input_ids=torch.tensor([[1, 5, 9, 2]])).logits.sum().backward()
    optimizer.step()
    return model, optimizer
