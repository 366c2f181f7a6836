r"""Which token ids of two tokenizers stand for the same text: the one-to-one vocabulary map.

Built once per run from the two tokenizers. Each id is read as the bytes of text it
produces, whatever the tokenizer's spelling:

* byte-level BPE (GPT-2, Llama 3, SmolLM2): every character of the token stands for one
  byte (``"Ġ"`` is a space, ``"Ċ"`` a newline);
* SentencePiece-style (``"▁"`` is a space) with byte fallback: ``<0xNN>`` is the byte
  ``0xNN``;
* other tokens: their UTF-8 text.

Special tokens (``<s>``, ``<|endoftext|>``, ...) match only special tokens with the same
content, and the two ``eos`` tokens always match each other. An id maps when exactly one
id on each side has its bytes: a byte-fallback token gives way to a regular token with the
same byte, and bytes spelled by two regular ids of one tokenizer map to nothing.

>>> from kd_train.data.vocab_map import build_vocab_map
>>> from kd_train.testing import train_tiny_tokenizer
>>> a, b = train_tiny_tokenizer(vocab_size=300), train_tiny_tokenizer(vocab_size=320)
>>> pairs = build_vocab_map(a, b)
>>> len(pairs) == len(a)  # b extends a's merges: every id of a has its twin
True
>>> a.convert_ids_to_tokens(int(pairs.student[7])) == b.convert_ids_to_tokens(int(pairs.teacher[7]))
True
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch

_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@cache
def byte_level_alphabet() -> dict[str, int]:
    """The byte-level BPE alphabet: printable stand-in character to the byte it stands for.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes (control characters,
    space, ...) are given the characters from U+0100 on, in byte order.

    >>> from kd_train.data.vocab_map import byte_level_alphabet
    >>> table = byte_level_alphabet()
    >>> (table["Ġ"], table["Ċ"], table["A"], len(table))
    (32, 10, 65, 256)
    """
    kept = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {chr(b): b for b in kept}
    shifted = 0
    for b in range(256):
        if b not in kept:
            table[chr(0x100 + shifted)] = b
            shifted += 1
    return table


def _style(tokenizer: Any) -> tuple[bool, bool]:
    """``(byte_level, byte_fallback)`` read from the fast tokenizer's JSON."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False, False
    body = json.loads(backend.to_str())
    text = json.dumps([body.get("decoder"), body.get("pre_tokenizer")])
    return '"ByteLevel"' in text, bool((body.get("model") or {}).get("byte_fallback"))


def token_texts(tokenizer: Any) -> dict[int, bytes | str]:
    """Every id's text: ``bytes`` for a regular token, the content ``str`` for a special one.

    >>> from kd_train.data.vocab_map import token_texts
    >>> from kd_train.testing import train_tiny_tokenizer
    >>> tok = train_tiny_tokenizer()
    >>> texts = token_texts(tok)
    >>> texts[tok.convert_tokens_to_ids("Ġ")], texts[tok.eos_token_id]
    (b' ', '</s>')
    """
    byte_level, byte_fallback = _style(tokenizer)
    alphabet = byte_level_alphabet()
    special = {int(i) for i in tokenizer.all_special_ids}
    special |= {
        int(i) for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if t.special
    }
    out: dict[int, bytes | str] = {}
    for token, token_id in tokenizer.get_vocab().items():
        if token_id in special:
            out[token_id] = token
        elif byte_fallback and (m := _BYTE_FALLBACK.fullmatch(token)):
            out[token_id] = bytes([int(m.group(1), 16)])
        elif byte_level and all(c in alphabet for c in token):
            out[token_id] = bytes(alphabet[c] for c in token)
        else:
            out[token_id] = token.replace("▁", " ").encode("utf-8")
    return out


def _by_text(tokenizer: Any) -> dict[bytes | str, int]:
    """Text to its one id; texts spelled by two regular ids are left out (ambiguous)."""
    _, byte_fallback = _style(tokenizer)
    found: dict[bytes | str, list[int]] = {}
    for token_id, text in token_texts(tokenizer).items():
        found.setdefault(text, []).append(token_id)
    out: dict[bytes | str, int] = {}
    for text, ids in found.items():
        if byte_fallback and len(ids) > 1:
            names = tokenizer.convert_ids_to_tokens(ids)
            ids = [i for i, n in zip(ids, names, strict=True) if not _BYTE_FALLBACK.fullmatch(n)]
        if len(ids) == 1:
            out[text] = ids[0]
    return out


@dataclass(frozen=True)
class VocabMap:
    """Pairs of ids that stand for the same text, ``int64 [M]`` each, sorted by teacher id.

    Attributes:
        student: the student's ids.
        teacher: the teacher's ids (``teacher[i]`` is the twin of ``student[i]``).
    """

    student: torch.Tensor
    teacher: torch.Tensor

    def __len__(self) -> int:
        """Number of pairs."""
        return int(self.student.numel())


def build_vocab_map(student: Any, teacher: Any) -> VocabMap:
    """Map every id of ``teacher`` to the ``student`` id with the same text, one to one.

    See the module docstring for how an id's text is read.
    """
    s_text, t_text = _by_text(student), _by_text(teacher)
    pairs = {t_id: s_text[text] for text, t_id in t_text.items() if text in s_text}
    s_eos, t_eos = student.eos_token_id, teacher.eos_token_id
    if s_eos is not None and t_eos is not None:
        pairs = {t: s for t, s in pairs.items() if s != s_eos and t != t_eos}
        pairs[int(t_eos)] = int(s_eos)
    ordered = sorted(pairs.items())
    return VocabMap(
        student=torch.tensor([s for _, s in ordered], dtype=torch.int64),
        teacher=torch.tensor([t for t, _ in ordered], dtype=torch.int64),
    )
