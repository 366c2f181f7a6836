"""Tiny, real models and tokenizers for tests and benchmarks.

They are built by the product's factory, :mod:`kd_train.models` (a byte-level BPE
tokenizer trained offline, a random GQA Llama built from a config), at the sizes the tests
use: a student of hidden size 32 and 2 layers unless asked otherwise.

>>> import tempfile
>>> from transformers import AutoModelForCausalLM, AutoTokenizer
>>> from kd_train.testing import save_tiny_llama
>>> path = save_tiny_llama(tempfile.mkdtemp(), seed=0)
>>> tok = AutoTokenizer.from_pretrained(path)
>>> model = AutoModelForCausalLM.from_pretrained(path)
>>> model.config.num_key_value_heads < model.config.num_attention_heads
True
>>> model.config.vocab_size == len(tok)
True
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from transformers import LlamaConfig

from kd_train.models import DEFAULT_CORPUS, llama_config, save_random_llama, train_tokenizer

# The fixtures' tokenizer is the product's, under the name the tests have always used.
train_tiny_tokenizer = train_tokenizer


def tiny_llama_config(vocab_size: int, hidden_size: int = 32, num_layers: int = 2) -> LlamaConfig:
    """Return the tests' Llama config: GQA (4 heads, 2 KV heads), MLP twice the hidden size.

    >>> from kd_train.testing import tiny_llama_config
    >>> cfg = tiny_llama_config(300)
    >>> (cfg.num_attention_heads, cfg.num_key_value_heads)
    (4, 2)
    """
    return llama_config(vocab_size, hidden_size=hidden_size, num_layers=num_layers)


def save_tiny_llama(
    path: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 32,
    num_layers: int = 2,
    corpus: Iterable[str] = DEFAULT_CORPUS,
    vocab_size: int = 320,
) -> Path:
    """Build a random tiny GQA Llama and its tokenizer, save both to ``path``, return it.

    The tokenizer is trained on ``corpus``; the model's vocabulary is the tokenizer's. The
    same ``seed`` and arguments give the same weights, so a test can rebuild a model it
    saved earlier and compare.
    """
    tokenizer = train_tokenizer(corpus, vocab_size)
    config = tiny_llama_config(len(tokenizer), hidden_size, num_layers)
    return save_random_llama(path, config, tokenizer, seed=seed)
