"""SHA-256 fingerprints of files, directory trees, source weights and tokenizers.

>>> import tempfile, pathlib
>>> from kd_convert.fingerprint import sha256_file
>>> path = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
>>> _ = path.write_bytes(b"abc")
>>> sha256_file(path)[:16]
'ba7816bf8f01cfea'
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

#: Files of a saved model whose bytes define it (weights and architecture).
SOURCE_PATTERNS = ("config.json", "*.safetensors", "*.bin", "*.safetensors.index.json")
#: Files whose presence means a tokenizer was saved with the model.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Return the hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_tree(root: str | Path, exclude: Iterable[str] = ()) -> dict[str, str]:
    """Return ``{relative posix path: sha256}`` for every file under ``root``.

    Directories such as a Core ML ``.mlpackage`` are walked; names in ``exclude`` (relative
    paths) are skipped. Keys are sorted so the mapping is stable.
    """
    base = Path(root)
    skip = set(exclude)
    found = {
        path.relative_to(base).as_posix(): path
        for path in base.rglob("*")
        if path.is_file() and path.relative_to(base).as_posix() not in skip
    }
    return {name: sha256_file(found[name]) for name in sorted(found)}


def source_fingerprint(model_dir: str | Path) -> dict[str, str]:
    """Return ``{file name: sha256}`` of the config and weight files of a saved model."""
    base = Path(model_dir)
    files = sorted({p for pattern in SOURCE_PATTERNS for p in base.glob(pattern) if p.is_file()})
    return {p.name: sha256_file(p) for p in files}


def tokenizer_fingerprint(model_dir: str | Path) -> str | None:
    """Return the kd-train fingerprint of the tokenizer saved in ``model_dir``, or ``None``.

    Uses :func:`kd_train.teachers.fingerprint.tokenizer_fingerprint` (canonical tokenizer JSON
    plus special tokens), the same value kd-train stores with cached teacher log-probs, so a
    contract can be matched against the data the student was distilled on.
    """
    base = Path(model_dir)
    if not any((base / name).is_file() for name in TOKENIZER_FILES):
        return None
    from kd_train.teachers.fingerprint import tokenizer_fingerprint as fingerprint
    from transformers import AutoTokenizer

    return fingerprint(AutoTokenizer.from_pretrained(base, local_files_only=True))
