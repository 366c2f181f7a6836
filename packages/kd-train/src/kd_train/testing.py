"""Tiny, real models and tokenizers for tests, demos and benchmarks.

Everything here is built offline: a byte-level BPE tokenizer is trained with
:mod:`tokenizers` on text given by the caller, and a random ``transformers`` Llama (GQA:
fewer key/value heads than attention heads) is built from a config. Both are saved with
``save_pretrained`` so that they are loaded back exactly as a user's model would be, with
``AutoTokenizer.from_pretrained`` and ``AutoModelForCausalLM.from_pretrained``.

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

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

#: Special tokens of the tiny tokenizer, in id order (``<unk>`` = 0, ``<s>`` = 1, ...).
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")

#: A few lines of text that cover the characters the toy datasets use.
DEFAULT_CORPUS = (
    "The quick brown fox jumps over the lazy dog.",
    'Call the tool get_weather with {"city": "Paris", "unit": "celsius"}.',
    "It is certain. Ask again later. Very doubtful. Outlook good. My reply is no.",
    "def add(a, b):\n    return a + b\n",
    "0123456789 +-*/=()[]{}<>:;,.!?'\"_#@$%&|\\~^`",
)


def train_tiny_tokenizer(
    corpus: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 320
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``corpus`` and wrap it as a fast HF tokenizer.

    Every byte is in the initial alphabet, so any text round-trips, whatever the corpus.
    The vocabulary holds at most ``vocab_size`` entries (fewer when the corpus is small).

    >>> from kd_train.testing import train_tiny_tokenizer
    >>> tok = train_tiny_tokenizer(vocab_size=300)
    >>> tok.decode(tok("héllo {}")["input_ids"])
    'héllo {}'
    """
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = list(corpus)
    tokenizer.train_from_iterator(lines * 8, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )


def tiny_llama_config(vocab_size: int, hidden_size: int = 32, num_layers: int = 2) -> LlamaConfig:
    """Return a small Llama config with grouped-query attention (4 heads, 2 KV heads).

    >>> from kd_train.testing import tiny_llama_config
    >>> cfg = tiny_llama_config(300)
    >>> (cfg.num_attention_heads, cfg.num_key_value_heads)
    (4, 2)
    """
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=False,
    )


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

    The same ``seed`` and arguments give the same weights, so a test can rebuild a model
    it saved earlier and compare.
    """
    out = Path(path)
    tokenizer = train_tiny_tokenizer(corpus, vocab_size)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(len(tokenizer), hidden_size, num_layers))
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
