"""Shared pytest configuration for every test in the repository.

* Nothing may reach a model hub: ``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE`` are set
  before any test module imports ``transformers``.
* ``tiny_llama_dir`` / ``tiny_teacher_dir``: a random GQA Llama student and a wider teacher
  that share one tokenizer trained offline, saved with ``save_pretrained`` to a temp dir.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny random Llama student (hidden 32, 2 layers, 4 heads, 2 KV heads) + tokenizer."""
    from kd_train.testing import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), seed=0)


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny random Llama teacher (hidden 64, 3 layers) with the student's tokenizer."""
    from kd_train.testing import save_tiny_llama

    return save_tiny_llama(
        tmp_path_factory.mktemp("tiny-teacher"), seed=1, hidden_size=64, num_layers=3
    )
