"""The on-disk format of a logits cache: manifest, shards, and the rows they hold.

``kd-train cache-logits`` (``kd_train.commands.cache_logits``) writes a cache directory
with :func:`~kd_train.teachers.cached.write_shard` and
:meth:`~kd_train.teachers.cached.Manifest.write`;
:class:`~kd_train.teachers.cached.CachedTeacher` reads it back (its public names are
documented there)::

    CACHE_DIR/shard-00000.safetensors   ids [N, k], logprobs [N, k] fp16, tail [N] fp16
    CACHE_DIR/shard-00001.safetensors   ...
    CACHE_DIR/manifest.json             written last: its presence means "complete"

**Layout.** Records are tokenized exactly as the trainer tokenizes them,
by :func:`kd_train.data.tokenization.encode_record`: ``[bos] + prompt tokens + completion
tokens + [eos]``, truncated to ``max_length`` (``bos``/``eos`` as configured). Only the
positions the loss uses are stored: for a sequence of ``T`` tokens whose first label (first
completion token) sits at position ``h``, rows are the positions ``start = max(h-1, 0)`` to
``T-2``, i.e. one row per predicted completion token (and ``eos``). A record's rows are
rows ``[row_start, row_end)`` of one shard, listed in the manifest.

**Values per row.** The top-k ids (``uint16`` when the vocabulary has at most 65,536
entries, else ``int32``), their log-probs in fp16, sorted decreasing, and the log of the
tail mass ``log Σ_{i ∉ top-k} p_i`` in fp16, computed exactly from the float32 log-probs
(a logsumexp over the other ids). The tail is stored rather than derived as
``1 - Σ exp(top-k)`` because for a confident teacher the top-k covers nearly all the
mass, and the derived tail then loses all its digits to the fp16 rounding of the top-k
values; the benchmark ``bench_teacher_cache.py`` measures both. Bytes per position:
``2k + 2k + 2 = 4k + 2`` (``6k + 2`` with int32 ids) plus a small header per shard.

**Cross-tokenizer caches.** Made with ``cache-logits --student-tokenizer DIR`` for a
student with another tokenizer (``loss.cross_tokenizer``): the rows are the teacher's own
tokens as above, and ``cross.safetensors`` also holds what the trainer needs to align them
with the student's tokens without the teacher's tokenizer: every record's teacher token
ids, the character offsets of its completion tokens, the teacher's ``eos`` id and the
one-to-one vocabulary map of the two tokenizers (:mod:`kd_train.teachers.cross`). The
manifest then fingerprints both tokenizers (``student_tokenizer_fingerprint``) and lists
the file's SHA-256 (``cross``); :meth:`~kd_train.teachers.cached.CachedTeacher.open`
checks the caller's tokenizer against the student's fingerprint.

**Manifest.** JSON with the format, ``k``, vocab size, the tokenizer, dataset and
teacher-weights fingerprints (:mod:`kd_train.teachers.fingerprint`), SHA-256 of every
shard, and per record id its shard, row range, ``start``, sequence length and the SHA-256
of its token ids. While a cache is being built its progress lives in
``manifest.partial.json``; a directory without ``manifest.json`` is incomplete.

>>> import torch
>>> from kd_train.teachers.cache_format import topk_with_tail
>>> logp = torch.log(torch.tensor([[0.6, 0.1, 0.3]]))
>>> top = topk_with_tail(logp, k=2)
>>> top.ids.tolist(), round(float(top.tail_logprob().exp()), 4)
([[0, 2]], 0.1)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as save_safetensors

from kd_train.atomic import atomic_write_bytes, atomic_write_text
from kd_train.errors import KDTrainError
from kd_train.teachers.base import TeacherOutput
from kd_train.teachers.fingerprint import file_sha256

#: Version tag written in every manifest; readers refuse any other.
FORMAT = "kd-topk-cache/1"
#: The file whose presence marks a complete cache.
MANIFEST = "manifest.json"
#: Progress of an unfinished build (removed once :data:`MANIFEST` is written).
PARTIAL_MANIFEST = "manifest.partial.json"


class CacheError(KDTrainError):
    """A logits cache cannot be used (unknown record, bad settings, bad file)."""


class IncompleteCacheError(CacheError):
    """The cache directory has no ``manifest.json``: the build did not finish."""


class CacheMismatchError(CacheError):
    """The cache was made with another tokenizer or dataset than the caller's."""


class CorruptShardError(CacheError):
    """A shard file is missing or its SHA-256 differs from the manifest's."""


def topk_with_tail(log_probs: torch.Tensor, k: int) -> TeacherOutput:
    """Top-``k`` of full-vocabulary log-probs ``[..., V]`` with the exact log tail mass.

    ``tail = logsumexp(log_probs with the top-k ids set to -inf)``, so it keeps its
    precision however small the tail is.
    """
    values, ids = torch.topk(log_probs.float(), k, dim=-1)
    rest = log_probs.float().scatter(-1, ids, float("-inf"))
    return TeacherOutput(ids=ids, logprobs=values, tail=torch.logsumexp(rest, dim=-1))


def truncate_topk(top: TeacherOutput, k: int) -> TeacherOutput:
    """Keep the first ``k`` entries; the dropped ones join the tail (``logaddexp``)."""
    ids, logprobs, tail = top.topk_parts()
    if logprobs.shape[-1] <= k:
        return top
    tail = torch.logaddexp(tail, torch.logsumexp(logprobs[..., k:], dim=-1))
    return dataclasses.replace(top, ids=ids[..., :k], logprobs=logprobs[..., :k], tail=tail)


def sequence_sha256(token_ids: Any) -> str:
    """Hex SHA-256 of token ids as little-endian int32 (how the manifest keys sequences)."""
    return hashlib.sha256(np.asarray(token_ids, dtype="<i4").tobytes()).hexdigest()


def ids_dtype_for(vocab_size: int) -> str:
    """The stored id dtype: ``"uint16"`` when every id fits, else ``"int32"``."""
    return "uint16" if vocab_size <= 1 << 16 else "int32"


@dataclass(frozen=True)
class CacheConfig:
    """What a cache was made from; two builds with equal configs give equal caches."""

    k: int
    vocab_size: int
    tokenizer_fingerprint: str
    dataset_fingerprint: str
    teacher_fingerprint: str
    shard_size: int
    max_length: int
    add_bos: bool
    add_eos: bool
    ids_dtype: str = "uint16"
    student_tokenizer_fingerprint: str | None = None


@dataclass(frozen=True)
class ShardEntry:
    """One shard file: name, SHA-256 (hex), number of rows and size in bytes."""

    file: str
    sha256: str
    rows: int
    bytes: int


@dataclass(frozen=True)
class RecordEntry:
    """Where one record's rows are: ``shard``, rows ``[row_start, row_end)``.

    ``start`` is the sequence position of the first row, ``length`` the sequence length
    and ``tokens_sha256`` the :func:`sequence_sha256` of its token ids.
    """

    shard: int
    row_start: int
    row_end: int
    start: int
    length: int
    tokens_sha256: str


@dataclass
class Manifest:
    """The manifest of a cache: its config, shards and record index."""

    config: CacheConfig
    shards: list[ShardEntry] = field(default_factory=list)
    records: dict[str, RecordEntry] = field(default_factory=dict)
    cross: ShardEntry | None = None

    @property
    def positions(self) -> int:
        """Number of stored positions (rows) over all shards."""
        return sum(s.rows for s in self.shards)

    @property
    def bytes_per_token(self) -> float:
        """Total shard bytes divided by stored positions."""
        return sum(s.bytes for s in self.shards) / max(self.positions, 1)

    def to_json(self) -> str:
        """Serialise as the manifest file's JSON text."""
        body = {
            "format": FORMAT,
            "config": asdict(self.config),
            "positions": self.positions,
            "bytes_per_token": round(self.bytes_per_token, 3),
            "shards": [asdict(s) for s in self.shards],
            "records": {rid: asdict(r) for rid, r in self.records.items()},
        }
        if self.cross is not None:
            body["cross"] = asdict(self.cross)
        return json.dumps(body, indent=1) + "\n"

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """Read a manifest file; :class:`CacheError` if it is not one of this format."""
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            if body.get("format") != FORMAT:
                raise CacheError(
                    f"{path}: format {body.get('format')!r} is not {FORMAT!r}; rebuild the "
                    "cache with this version of kd-train cache-logits"
                )
            return cls(
                config=CacheConfig(**body["config"]),
                shards=[ShardEntry(**s) for s in body["shards"]],
                records={rid: RecordEntry(**r) for rid, r in body["records"].items()},
                cross=ShardEntry(**body["cross"]) if body.get("cross") else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CacheError(f"{path}: not a valid cache manifest ({exc!r})") from exc

    def write(self, directory: Path, name: str = MANIFEST) -> None:
        """Write the manifest atomically as ``directory / name``."""
        atomic_write_text(directory / name, self.to_json())


def shard_name(index: int) -> str:
    """File name of shard ``index``: ``shard-00000.safetensors``."""
    return f"shard-{index:05d}.safetensors"


def write_shard(directory: Path, index: int, top: TeacherOutput, ids_dtype: str) -> ShardEntry:
    """Write rows ``top`` (``[N, k]``, tail ``[N]``) as shard ``index``, atomically."""
    ids, logprobs, tail = top.topk_parts()
    torch_ids = torch.uint16 if ids_dtype == "uint16" else torch.int32
    tensors = {
        "ids": ids.to(torch.int32).to(torch_ids).contiguous(),
        "logprobs": logprobs.to(torch.float16).contiguous(),
        "tail": tail.to(torch.float16).contiguous(),
    }
    data = save_safetensors(tensors, metadata={"format": FORMAT})
    name = shard_name(index)
    atomic_write_bytes(directory / name, data)
    digest = hashlib.sha256(data).hexdigest()
    return ShardEntry(file=name, sha256=digest, rows=int(ids.shape[0]), bytes=len(data))


def verify_shard(directory: Path, entry: ShardEntry) -> None:
    """Raise :class:`CorruptShardError` naming the file if it is missing or altered."""
    path = directory / entry.file
    if not path.is_file():
        raise CorruptShardError(
            f"shard {path} is missing; the cache is damaged: rerun kd-train cache-logits"
        )
    actual = file_sha256(path)
    if actual != entry.sha256:
        raise CorruptShardError(
            f"shard {path} is corrupted: its SHA-256 is {actual} but the manifest says "
            f"{entry.sha256}; delete the file and rerun kd-train cache-logits to rebuild it"
        )


def read_manifest(directory: str | Path) -> Manifest:
    """Read the manifest of a complete cache (no fingerprint or hash checks).

    Raises:
        IncompleteCacheError: there is no ``manifest.json``.
    """
    root = Path(directory)
    if not (root / MANIFEST).is_file():
        if (root / PARTIAL_MANIFEST).is_file():
            done = len(Manifest.read(root / PARTIAL_MANIFEST).shards)
            raise IncompleteCacheError(
                f"cache {root} is incomplete: {done} shard(s) written but no {MANIFEST}; "
                "rerun kd-train cache-logits with the same arguments to finish it"
            )
        raise IncompleteCacheError(
            f"{root} has no {MANIFEST}: it is not a finished kd-train logits cache "
            "(run kd-train cache-logits, and let it finish)"
        )
    return Manifest.read(root / MANIFEST)
