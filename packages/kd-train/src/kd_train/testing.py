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

import math
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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


#: Words of the synthetic records written by :func:`synthetic_record`.
SYNTHETIC_WORDS = (
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog",
    "tool", "call", "get_weather", "city", "Paris", "unit",
)  # fmt: skip


def synthetic_record(index: int, rng: random.Random, *, topk: bool = False) -> dict[str, Any]:
    """A valid KD record of random words, id ``r<index>``, for benchmarks and load tests.

    The completion has 12-24 words and one ``integration`` span; with ``topk`` it carries
    four teacher log-probs per word (descending, probabilities summing to at most 0.95),
    ids below 4096. The same ``rng`` state gives the same record.

    >>> import random
    >>> from kd_train.data import KDRecord
    >>> from kd_train.testing import synthetic_record
    >>> row = synthetic_record(7, random.Random(0), topk=True)
    >>> words = len(row["completion"].split())
    >>> KDRecord.from_dict(row).id, len(row["teacher_topk"]["ids"]) == words
    ('r7', True)
    """
    n = rng.randint(12, 24)
    completion = " ".join(rng.choices(SYNTHETIC_WORDS, k=n))
    record: dict[str, Any] = {
        "schema_version": 1,
        "id": f"r{index}",
        "prompt": " ".join(rng.choices(SYNTHETIC_WORDS, k=rng.randint(6, 14))) + ":",
        "completion": completion,
    }
    if topk:
        record["teacher_topk"] = {
            "ids": [rng.sample(range(4096), 4) for _ in range(n)],
            "logprobs": [_synthetic_logprobs(rng) for _ in range(n)],
        }
    record["spans"] = [{"kind": "integration", "start": 0, "end": min(4, len(completion))}]
    return record


def _synthetic_logprobs(rng: random.Random) -> list[float]:
    # Four log-probs, descending, whose probabilities sum to at most 0.95.
    weights = sorted((rng.random() + 0.05 for _ in range(4)), reverse=True)
    total = sum(weights) / 0.95
    return [round(math.log(w / total), 4) for w in weights]
