r"""Map the token strings an endpoint returns to the ids of the teacher's tokenizer.

Servers name tokens in different ways: vLLM with ``return_tokens_as_token_ids`` as
``"token_id:N"``; llama.cpp and vLLM otherwise by the token's *text* (``" the"``,
``"\n"``), decoded from its bytes with invalid UTF-8 dropped; some by the vocabulary
string (``"Ġthe"``); OpenAI adds the raw ``bytes``. A :class:`TokenMap` knows every
token's bytes, the way its tokenizer family stores them:

* byte-level BPE (GPT-2, Llama 3, SmolLM2): each character of the vocabulary string stands
  for one byte (``"Ġ"`` is ``0x20``, ``"Ċ"`` is ``0x0A``);
* SentencePiece with byte fallback (Llama 2, Mistral): ``"▁"`` is a space and
  ``"<0xNN>"`` is the byte ``NN``;
* special tokens: the UTF-8 of their content (``"<|im_end|>"``).

and maps a returned token (:meth:`TokenMap.lookup`): by ``"token_id:N"``, by ``bytes`` when
given, else by text, else by vocabulary string. A token is **unmappable** (``None``) when
its name fits no id, or fits several: ``""`` (a token holding part of a UTF-8 character,
or a special token a server does not render), or a text that both a complete token and a
partial one display as (``b" \xf0"`` shows as ``" "``). Rows with an unmappable token
are never silently shortened: :func:`map_alternatives` says which and why, and the caller
refuses or marks them.

>>> from kd_train.teachers.tokens import TokenMap
>>> tm = TokenMap.from_pieces(["a", "Ġthe", "Ċ", "ðŁ"], family="byte_level")
>>> tm.lookup(" the"), tm.lookup("Ġthe"), tm.lookup("\n"), tm.lookup("token_id:3")
(1, 1, 2, 3)
>>> tm.lookup("") is None, tm.lookup("", raw=[240, 159]) == 3
(True, True)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from kd_train.errors import KDTrainError
from kd_train.teachers.openai_api import Generation

Family = Literal["byte_level", "sentencepiece"]

_TOKEN_ID = re.compile(r"^token_id:(\d+)$")
_SP_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def model_location(path: str | Path) -> tuple[Path, str | None]:
    """Where ``transformers`` reads a local model or tokenizer: ``(directory, gguf_file)``.

    A ``.gguf`` file (the one llama.cpp serves) is read from its directory with
    ``gguf_file=`` its name; anything else is a directory written by ``save_pretrained``.

    >>> from kd_train.teachers.tokens import model_location
    >>> model_location("models/smollm2/SmolLM2-135M-Instruct.Q8_0.gguf")
    (PosixPath('models/smollm2'), 'SmolLM2-135M-Instruct.Q8_0.gguf')
    >>> model_location("runs/toy/student")
    (PosixPath('runs/toy/student'), None)
    """
    source = Path(path)
    if source.suffix == ".gguf":
        return source.parent, source.name
    return source, None


def load_tokenizer(path: str | Path) -> Any:
    """The ``transformers`` tokenizer at ``path``: a directory, or a model's GGUF file.

    A ``.gguf`` file (the teacher llama.cpp serves) is read with ``gguf_file=`` (needs the
    ``gguf`` package). Only a local path is read (``local_files_only``): a name that is no
    file or directory here is refused, never looked up on a hub.

    Raises:
        OSError: nothing loadable at ``path``, or no such file or directory.
        ValueError: a file ``transformers`` cannot read as a tokenizer.
    """
    from transformers import AutoTokenizer

    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"no such file or directory: {source}")
    directory, gguf_file = model_location(source)
    if gguf_file is not None and source.is_file():
        return AutoTokenizer.from_pretrained(
            str(directory), gguf_file=gguf_file, local_files_only=True
        )
    return AutoTokenizer.from_pretrained(str(source), local_files_only=True)


@cache
def _unicode_to_byte() -> dict[str, int]:
    """The inverse of GPT-2's ``bytes_to_unicode``: vocabulary character -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def piece_bytes(piece: str, family: Family) -> bytes | None:
    r"""The bytes of the vocabulary string ``piece`` in ``family``; ``None`` if it has none.

    >>> from kd_train.teachers.tokens import piece_bytes
    >>> piece_bytes("Ġthe", "byte_level"), piece_bytes("▁the", "sentencepiece")
    (b' the', b' the')
    >>> piece_bytes("<0x0A>", "sentencepiece")
    b'\n'
    """
    if family == "sentencepiece":
        match = _SP_BYTE.match(piece)
        if match:
            return bytes([int(match.group(1), 16)])
        return piece.replace("▁", " ").encode("utf-8")
    table = _unicode_to_byte()
    try:
        return bytes(table[ch] for ch in piece)
    except KeyError:
        return None


def tokenizer_family(tokenizer: Any) -> Family:
    """How ``tokenizer``'s vocabulary strings stand for bytes (from its decoder).

    Raises:
        kd_train.errors.KDTrainError: neither byte-level BPE nor SentencePiece (byte fallback or
            ``▁`` spaces): the returned token strings cannot be mapped back.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = repr(getattr(backend, "decoder", None))
    if "ByteLevel" in decoder:
        return "byte_level"
    if "ByteFallback" in decoder or "▁" in decoder or "Metaspace" in decoder:
        return "sentencepiece"
    vocab = tokenizer.get_vocab()
    if "<0x0A>" in vocab or any(p.startswith("▁") for p in list(vocab)[:2000]):
        return "sentencepiece"
    raise KDTrainError(
        f"cannot tell how the tokenizer {type(tokenizer).__name__} stores token bytes (its "
        f"decoder is {decoder}); token strings returned by an endpoint can be mapped to ids "
        "for byte-level BPE and SentencePiece tokenizers only"
    )


@dataclass(frozen=True)
class Mapped:
    """One position's alternatives mapped to ids, or why they cannot be.

    Attributes:
        ids: the ``k`` ids, most likely first (empty when ``problem`` is set).
        logprobs: their log-probs.
        problem: why the position is unmappable (``None`` when it is mapped).
        foreign: an alternative is no token of the tokenizer at all (another tokenizer),
            rather than one that several tokens are shown as.
    """

    ids: list[int]
    logprobs: list[float]
    problem: str | None = None
    foreign: bool = False


class TokenMap:
    """Every token's bytes and names, to map returned token strings to ids.

    Build it with :meth:`of` (a ``transformers`` tokenizer) or :meth:`from_pieces`.
    """

    def __init__(self, token_bytes: Sequence[bytes | None], pieces: Sequence[str]) -> None:
        self.token_bytes = list(token_bytes)
        self._by_bytes: dict[bytes, int] = {}
        shown: dict[str, set[int]] = {}
        for i, raw in enumerate(self.token_bytes):
            if raw is None:
                continue
            self._by_bytes.setdefault(raw, i)
            # how a server that drops invalid UTF-8 shows the token
            shown.setdefault(raw.decode("utf-8", errors="ignore"), set()).add(i)
        self._by_text = {t: next(iter(ids)) for t, ids in shown.items() if len(ids) == 1}
        self._ambiguous = {t for t, ids in shown.items() if len(ids) > 1}
        self._by_piece = {p: i for i, p in enumerate(pieces)}

    @classmethod
    def from_pieces(cls, pieces: Sequence[str], family: Family) -> TokenMap:
        """A map over the vocabulary strings ``pieces`` (index = id) of ``family``."""
        return cls([piece_bytes(p, family) for p in pieces], pieces)

    @classmethod
    def of(cls, tokenizer: Any) -> TokenMap:
        """The map of a ``transformers`` tokenizer (its family from its decoder).

        Raises:
            kd_train.errors.KDTrainError: the family cannot be told (:func:`tokenizer_family`).
        """
        family = tokenizer_family(tokenizer)
        vocab = dict(tokenizer.get_vocab())
        size = max(vocab.values()) + 1
        pieces = [""] * size
        for piece, i in vocab.items():
            pieces[i] = piece
        raw: list[bytes | None] = [piece_bytes(p, family) for p in pieces]
        for i, added in dict(getattr(tokenizer, "added_tokens_decoder", {}) or {}).items():
            if not (family == "sentencepiece" and _SP_BYTE.match(str(added))):
                raw[int(i)] = str(added).encode("utf-8")  # content, not byte-mapped
        return cls(raw, pieces)

    def lookup(self, token: str, raw: Sequence[int] | None = None) -> int | None:
        """The id of a returned ``token`` (and its ``bytes``, when given), or ``None``.

        ``None`` when nothing or several tokens fit (see the module docstring).
        """
        match = _TOKEN_ID.match(token)
        if match:
            return int(match.group(1))
        if raw is not None:
            return self._by_bytes.get(bytes(raw))
        if self.ambiguous(token):
            return None
        by_text = self._by_text.get(token)
        return by_text if by_text is not None else self._by_piece.get(token)

    def ambiguous(self, token: str) -> bool:
        """Whether the returned text ``token`` fits several ids (``""``, or shown alike)."""
        if token == "" or token in self._ambiguous:
            return True
        by_text, by_piece = self._by_text.get(token), self._by_piece.get(token)
        return by_text is not None and by_piece is not None and by_text != by_piece

    def joins(self, ids: Sequence[int], text: str) -> bool:
        """Whether the bytes of ``ids``, joined, are the UTF-8 of ``text``.

        >>> from kd_train.teachers.tokens import TokenMap
        >>> tm = TokenMap.from_pieces(["Ġhi", "!", "ðŁ", "ĺĢ"], family="byte_level")
        >>> tm.joins([0, 1], " hi!"), tm.joins([2, 3], "😀"), tm.joins([0], "hi")
        (True, True, False)
        """
        return b"".join(self.token_bytes[i] or b"" for i in ids) == text.encode("utf-8")


def map_alternatives(
    tm: TokenMap, alternatives: Sequence[tuple[str, float, Sequence[int] | None]], k: int
) -> Mapped:
    """Map one position's alternatives ``(token, logprob, bytes)``, most likely first.

    The first ``k`` are kept; fewer than ``k`` distinct ids (a server whose answer merged
    tokens shown alike), or any token without exactly one id, make the position
    unmappable: ``k`` is never shrunk. A token that no id fits is marked ``foreign``.

    >>> from kd_train.teachers.tokens import TokenMap, map_alternatives
    >>> tm = TokenMap.from_pieces(["Ġa", "Ġb", "ðŁ"], family="byte_level")
    >>> map_alternatives(tm, [(" a", -0.1, None), (" b", -2.0, None)], 2).ids
    [0, 1]
    >>> map_alternatives(tm, [(" a", -0.1, None), ("", -2.0, None)], 2).problem
    "alternative '' fits several token ids"
    >>> map_alternatives(tm, [(" a", -0.1, None)], 2).problem
    '1 alternatives, fewer than k=2'
    """
    if len(alternatives) < k:
        return Mapped([], [], f"{len(alternatives)} alternatives, fewer than k={k}")
    ids: list[int] = []
    for token, _lp, raw in alternatives[:k]:
        found = tm.lookup(token, raw)
        if found is None and raw is None and tm.ambiguous(token):
            return Mapped([], [], f"alternative {token!r} fits several token ids")
        if found is None:
            return Mapped([], [], f"alternative {token!r} is no token of the tokenizer", True)
        ids.append(found)
    if len(set(ids)) < k:
        return Mapped([], [], f"alternatives {[a[0] for a in alternatives[:k]]} repeat an id")
    return Mapped(ids, [min(0.0, float(a[1])) for a in alternatives[:k]])


@dataclass(frozen=True)
class GenerationTopK:
    """A generation's top-k mapped to ids (``problem`` is ``None``), or why it cannot be.

    Attributes:
        ids: ``[n][k]`` ids, one row per generated token (empty when ``problem`` is set).
        logprobs: ``[n][k]`` log-probs.
        chosen: the generated tokens' ids, when every one maps to a single id.
        problem: ``{"positions": [...], "reason": "..."}``: the first unmappable
            positions and why, or the chosen tokens not joining into the text.
    """

    ids: list[list[int]]
    logprobs: list[list[float]]
    chosen: list[int] | None
    problem: dict[str, Any] | None


def generation_topk(tm: TokenMap, gen: Generation, k: int) -> GenerationTopK:
    """Map every position of ``gen`` to ``k`` ids (:func:`map_alternatives`), checked.

    The chosen tokens are mapped too (by ``bytes`` when given), and their bytes must join
    into ``gen.text``: otherwise the rows cannot be placed on the completion's tokens.

    Raises:
        kd_train.errors.KDTrainError: a returned token is no token of the tokenizer at all:
            the tokenizer given is not the teacher's.
    """
    ids: list[list[int]] = []
    logprobs: list[list[float]] = []
    bad: list[int] = []
    reasons: list[str] = []
    for pos, top in enumerate(gen.top):
        raw = gen.top_bytes[pos] if pos < len(gen.top_bytes) else [None] * len(top)
        got = map_alternatives(tm, [(t, lp, b) for (t, lp), b in zip(top, raw, strict=True)], k)
        if got.foreign:
            raise KDTrainError(
                f"the endpoint returned a token at position {pos} that the tokenizer does not "
                f"have ({got.problem}); give the teacher's own tokenizer"
            )
        if got.problem is not None:
            bad.append(pos)
            reasons.append(got.problem)
        ids.append(got.ids)
        logprobs.append(got.logprobs)
    chosen_raw = gen.token_bytes or [None] * len(gen.tokens)
    found = [tm.lookup(t, b) for t, b in zip(gen.tokens, chosen_raw, strict=True)]
    chosen = None if None in found else [int(i) for i in found if i is not None]
    if bad:
        problem = {"positions": bad[:20], "reason": reasons[0]}
        return GenerationTopK([], [], chosen, problem)
    if chosen is None:
        where = [i for i, f in enumerate(found) if f is None][:20]
        problem = {"positions": where, "reason": "a chosen token fits several token ids"}
        return GenerationTopK([], [], None, problem)
    if not tm.joins(chosen, gen.text):
        reason = "the chosen tokens' bytes do not join into the returned text"
        return GenerationTopK([], [], chosen, {"positions": [], "reason": reason})
    return GenerationTopK(ids, logprobs, chosen, None)
