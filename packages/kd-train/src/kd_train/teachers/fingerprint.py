"""Fingerprints: SHA-256 digests that say "this is the same tokenizer / dataset / model".

A cache of teacher log-probs is only valid for the tokenizer, dataset and teacher weights
it was made with; :mod:`kd_train.teachers.cached` stores these fingerprints in its
manifest and refuses a mismatch. Every fingerprint is the string ``"sha256:<64 hex>"``.

* :func:`tokenizer_fingerprint`: canonical tokenizer JSON (vocabulary, merges, added
  tokens, normalizer, pre-tokenizer, post-processor, decoder; without the runtime
  ``padding``/``truncation`` settings) plus the special tokens and their ids.
* :func:`dataset_fingerprint`: the bytes of the dataset file.
* :func:`records_fingerprint`: the records themselves, in order (robust to formatting).
* :func:`weights_fingerprint`: the names and bytes of a model directory's weight files.

>>> import tempfile, pathlib
>>> from kd_train.teachers.fingerprint import dataset_fingerprint, file_sha256
>>> path = pathlib.Path(tempfile.mkdtemp()) / "d.jsonl"
>>> _ = path.write_bytes(b"abc")
>>> dataset_fingerprint(path)
'sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'
>>> file_sha256(path) == dataset_fingerprint(path).removeprefix("sha256:")
True
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kd_train.data.schema import KDRecord
from kd_train.errors import KDTrainError

#: Suffixes of the files whose bytes :func:`weights_fingerprint` hashes.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")

_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Return the hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Fingerprint a ``transformers`` tokenizer by what decides its token ids.

    Fast tokenizers are hashed through their canonical ``tokenizer.json`` (keys sorted,
    ``padding`` and ``truncation`` dropped because they are runtime state); slow ones
    through their vocabulary. The special tokens map and the special ids are hashed too,
    so two tokenizers that differ only in which token is EOS get different fingerprints.

    Args:
        tokenizer: a ``PreTrainedTokenizerBase`` (fast or slow).

    Returns:
        ``"sha256:<hex>"``.

    >>> from kd_train.testing import train_tiny_tokenizer
    >>> from kd_train.teachers.fingerprint import tokenizer_fingerprint
    >>> a = tokenizer_fingerprint(train_tiny_tokenizer(vocab_size=300))
    >>> a == tokenizer_fingerprint(train_tiny_tokenizer(vocab_size=300))
    True
    >>> a == tokenizer_fingerprint(train_tiny_tokenizer(vocab_size=310))
    False
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        body: Any = json.loads(backend.to_str())
        body.pop("padding", None)
        body.pop("truncation", None)
    else:
        body = sorted(tokenizer.get_vocab().items())
    special = {
        "map": tokenizer.special_tokens_map,
        "ids": list(tokenizer.all_special_ids),
    }
    digest = hashlib.sha256(_canonical({"tokenizer": body, "special": special}))
    return f"sha256:{digest.hexdigest()}"


def dataset_fingerprint(path: str | Path) -> str:
    """Fingerprint a dataset file by its bytes: ``"sha256:" + sha256(file)``.

    Any change to the file, even whitespace, gives a new fingerprint; that is the safe
    side for a cache keyed on it.
    """
    return f"sha256:{file_sha256(path)}"


def records_fingerprint(records: Iterable[KDRecord]) -> str:
    """Fingerprint records in order by their canonical JSON (one digest over all).

    Unlike :func:`dataset_fingerprint` this ignores the file's formatting (key order,
    spacing) but not the order of the records.

    >>> from kd_train.data.schema import KDRecord
    >>> from kd_train.teachers.fingerprint import records_fingerprint
    >>> a, b = KDRecord("1", "p", "c"), KDRecord("2", "p", "d")
    >>> records_fingerprint([a, b]) == records_fingerprint([b, a])
    False
    """
    digest = hashlib.sha256()
    for record in records:
        line = _canonical(record.to_dict())
        digest.update(len(line).to_bytes(8, "little"))
        digest.update(line)
    return f"sha256:{digest.hexdigest()}"


def weights_fingerprint(model_dir: str | Path) -> str:
    """Fingerprint a model directory by the names and bytes of its weight files.

    Files ending in one of :data:`WEIGHT_SUFFIXES` are hashed in name order (sub-folders
    included), each as its relative path followed by its own SHA-256. A single weight file
    (a model's ``.gguf``) is hashed alone, by its name and bytes, whatever else its
    directory holds.

    Raises:
        kd_train.errors.KDTrainError: the directory holds no weight file.
    """
    root = Path(model_dir)
    if root.is_file() and root.suffix in WEIGHT_SUFFIXES:
        root, files = root.parent, [root]
    else:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise KDTrainError(
            f"{root}: no weight file ({', '.join(WEIGHT_SUFFIXES)}) to fingerprint; "
            "pass the directory written by save_pretrained"
        )
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(file_sha256(path).encode() + b"\n")
    return f"sha256:{digest.hexdigest()}"


#: The files of a saved tokenizer that decide its ids (those present are hashed).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)


def tokenizer_files_fingerprint(model_dir: str | Path) -> str:
    """Fingerprint the tokenizer files of a saved model directory, without loading them.

    The files of :data:`TOKENIZER_FILES` that exist are hashed in that order, each as its
    name followed by its own SHA-256 (``"sha256:<hex>"``; none present hashes to the
    digest of nothing). A model's ``.gguf`` file, which holds its tokenizer, is hashed
    whole, by its name and bytes.
    """
    root = Path(model_dir)
    digest = hashlib.sha256()
    if root.is_file():
        digest.update(root.name.encode() + b"\0" + file_sha256(root).encode() + b"\n")
        return f"sha256:{digest.hexdigest()}"
    for name in TOKENIZER_FILES:
        if (root / name).is_file():
            digest.update(name.encode() + b"\0" + file_sha256(root / name).encode() + b"\n")
    return f"sha256:{digest.hexdigest()}"
