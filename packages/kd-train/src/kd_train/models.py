"""Random Llama models and byte-level BPE tokenizers, built offline from a config.

A student need not start from a pretrained checkpoint: it can be a ``transformers`` Llama
built from a config, with grouped-query attention (fewer key/value heads than attention
heads), and a tokenizer trained on the text at hand. The demo pipelines build their toy
teacher and student here, and :mod:`kd_train.testing` builds its fixtures with the same
three functions. The model and tokenizer are saved with ``save_pretrained``, so they load
back exactly as a user's model would, with ``AutoModelForCausalLM.from_pretrained``.

>>> import tempfile
>>> from transformers import AutoModelForCausalLM
>>> from kd_train.models import llama_config, save_random_llama, train_tokenizer
>>> tok = train_tokenizer(vocab_size=300)
>>> path = save_random_llama(tempfile.mkdtemp(), llama_config(len(tok)), tok, seed=0)
>>> model = AutoModelForCausalLM.from_pretrained(path)
>>> model.config.num_key_value_heads < model.config.num_attention_heads
True
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

#: Special tokens of :func:`train_tokenizer`, in id order (``<unk>`` = 0, ``<s>`` = 1, ...).
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")

#: A few lines of text that cover the characters the toy datasets use.
DEFAULT_CORPUS = (
    "The quick brown fox jumps over the lazy dog.",
    'Call the tool get_weather with {"city": "Paris", "unit": "celsius"}.',
    "It is certain. Ask again later. Very doubtful. Outlook good. My reply is no.",
    "def add(a, b):\n    return a + b\n",
    "0123456789 +-*/=()[]{}<>:;,.!?'\"_#@$%&|\\~^`",
)


def train_tokenizer(
    corpus: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 320
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``corpus`` and wrap it as a fast HF tokenizer.

    Every byte is in the initial alphabet, so any text round-trips, whatever the corpus.
    The vocabulary holds at most ``vocab_size`` entries (fewer when the corpus is small);
    the special tokens are :data:`SPECIAL_TOKENS`, with ids 0 to 3.

    >>> from kd_train.models import train_tokenizer
    >>> tok = train_tokenizer(vocab_size=300)
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


def llama_config(
    vocab_size: int,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 512,
    tie_word_embeddings: bool = False,
    special_ids: tuple[int | None, int | None, int | None] = (1, 2, 3),
) -> LlamaConfig:
    """Return a Llama config with grouped-query attention (4 heads, 2 key/value heads).

    Args:
        vocab_size: rows of the embedding and of the output head.
        hidden_size: width of the residual stream (a multiple of 4, the head count).
        num_layers: decoder layers.
        intermediate_size: width of the MLP; ``2 * hidden_size`` when not given.
        max_position_embeddings: the longest sequence the model takes.
        tie_word_embeddings: share the embedding and the output head.
        special_ids: the ``(bos, eos, pad)`` token ids; those of :func:`train_tokenizer`
            by default.

    >>> from kd_train.models import llama_config
    >>> cfg = llama_config(300)
    >>> (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size)
    (4, 2, 64)
    """
    bos, eos, pad = special_ids
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size if intermediate_size is None else intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
        tie_word_embeddings=tie_word_embeddings,
    )


def save_random_llama(
    path: str | Path, config: LlamaConfig, tokenizer: PreTrainedTokenizerBase, *, seed: int
) -> Path:
    """Build a random ``LlamaForCausalLM`` from ``config``, save it and ``tokenizer`` to ``path``.

    The weights are drawn after ``torch.manual_seed(seed)``: the same seed and config give
    the same weights, so a model saved earlier can be rebuilt and compared.

    Returns:
        ``path``, as a :class:`~pathlib.Path`.
    """
    out = Path(path)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
