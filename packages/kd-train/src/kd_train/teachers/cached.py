"""``CachedTeacher``: teacher top-k log-probs computed once and read back from shards.

``kd-train cache-logits`` (``kd_train.commands.cache_logits``) runs a teacher over a
dataset once and writes a cache directory; :mod:`kd_train.teachers.cache_format` describes
its files (the manifest, the shards and the rows they hold) and holds the code that
writes and checks them.

**Lookup.** :meth:`CachedTeacher.for_record` returns one record's rows. The protocol
method :meth:`CachedTeacher.topk` takes a batch tokenized with the cache's layout
(right-padded or not): each row's real tokens are matched to a cached record by the
SHA-256 of their longest prefix that is a cached sequence, and the record's rows are
placed at their positions. The trainer can therefore swap a live teacher for a cached one
without knowing record ids: it passes the same ``input_ids``/``attention_mask``. Other
positions (prompt, padding) hold a placeholder distribution: the trainer masks them with
its labels, as it does for a live teacher.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as load_safetensors

from kd_train.data.batching import Batch
from kd_train.teachers.base import TeacherOutput
from kd_train.teachers.cache_format import (
    FORMAT,
    MANIFEST,
    PARTIAL_MANIFEST,
    CacheConfig,
    CacheError,
    CacheMismatchError,
    CorruptShardError,
    IncompleteCacheError,
    Manifest,
    RecordEntry,
    ShardEntry,
    ids_dtype_for,
    read_manifest,
    sequence_sha256,
    shard_name,
    topk_with_tail,
    truncate_topk,
    verify_shard,
    write_shard,
)

__all__ = [
    "FORMAT",
    "MANIFEST",
    "PARTIAL_MANIFEST",
    "CacheConfig",
    "CacheError",
    "CacheMismatchError",
    "CachedTeacher",
    "CorruptShardError",
    "IncompleteCacheError",
    "Manifest",
    "RecordEntry",
    "ShardEntry",
    "ids_dtype_for",
    "read_manifest",
    "sequence_sha256",
    "shard_name",
    "topk_with_tail",
    "truncate_topk",
    "verify_shard",
    "write_shard",
]


class CachedTeacher:
    """Read teacher top-k from a cache directory; a :class:`~kd_train.teachers.base.Teacher`.

    Build one with :meth:`open`, which checks the fingerprints and shard hashes.
    """

    def __init__(self, directory: Path, manifest: Manifest, serve_k: int | None = None) -> None:
        self.directory = directory
        self.manifest = manifest
        if serve_k is not None and not 1 <= serve_k <= manifest.config.k:
            raise CacheMismatchError(
                f"cache {directory} holds top-{manifest.config.k}; cannot serve top-{serve_k} "
                f"(set teacher.topk to at most {manifest.config.k}, or rebuild the cache with "
                f"--k {serve_k})"
            )
        #: How many entries ``cache(batch)`` serves per position (default: all cached).
        self.serve_k = serve_k or manifest.config.k
        self._by_sequence = {r.tokens_sha256: rid for rid, r in manifest.records.items()}
        self._lengths = frozenset(r.length for r in manifest.records.values())
        self._loaded: OrderedDict[int, dict[str, torch.Tensor]] = OrderedDict()

    @classmethod
    def open(
        cls,
        directory: str | Path,
        *,
        tokenizer_fingerprint: str,
        dataset_fingerprint: str,
        verify: bool = True,
        k: int | None = None,
    ) -> CachedTeacher:
        """Open a complete cache made with the given tokenizer and dataset.

        Args:
            directory: the ``--out`` directory of ``kd-train cache-logits``.
            tokenizer_fingerprint: :func:`~kd_train.teachers.fingerprint.tokenizer_fingerprint`
                of the tokenizer the caller tokenizes with (the student's, for a
                cross-tokenizer cache).
            dataset_fingerprint: :func:`~kd_train.teachers.fingerprint.dataset_fingerprint`
                of the dataset the caller trains on.
            verify: check every shard's SHA-256 now (reads all shards once).
            k: how many entries a call serves (at most the cached ``k``; default: all).

        Raises:
            IncompleteCacheError: the build did not finish (no ``manifest.json``).
            CacheMismatchError: a fingerprint differs; the message names both.
            CorruptShardError: a shard is missing or altered; the message names it.
        """
        root = Path(directory)
        manifest = read_manifest(root)
        config = manifest.config
        # A cross-tokenizer cache holds the teacher's tokens; its caller is the student.
        expected = config.student_tokenizer_fingerprint or config.tokenizer_fingerprint
        for what, ours, theirs in (
            ("tokenizer", tokenizer_fingerprint, expected),
            ("dataset", dataset_fingerprint, config.dataset_fingerprint),
        ):
            if ours != theirs:
                raise CacheMismatchError(
                    f"cache {root} was made with another {what}: the cache's {what} "
                    f"fingerprint is {theirs}, yours is {ours}; rebuild the cache with "
                    f"kd-train cache-logits for this {what}"
                )
        if verify:
            for entry in manifest.shards + ([manifest.cross] if manifest.cross else []):
                verify_shard(root, entry)
        return cls(root, manifest, k)

    @property
    def vocab_size(self) -> int:
        """The teacher's vocabulary size, as recorded in the manifest."""
        return self.manifest.config.vocab_size

    @property
    def k(self) -> int:
        """How many entries per position the cache holds (the most :meth:`topk` can give)."""
        return self.manifest.config.k

    def _shard(self, index: int) -> dict[str, torch.Tensor]:
        if index not in self._loaded:
            path = self.directory / self.manifest.shards[index].file
            tensors = load_safetensors(path.read_bytes())
            self._loaded[index] = {
                "ids": tensors["ids"].to(torch.int64),
                "logprobs": tensors["logprobs"].float(),
                "tail": tensors["tail"].float(),
            }
            if len(self._loaded) > 2:
                self._loaded.popitem(last=False)
        self._loaded.move_to_end(index)
        return self._loaded[index]

    def for_record(self, record_id: str) -> TeacherOutput:
        """Return a record's cached rows as ``[1, n, k]`` (``n`` = completion positions).

        Row ``j`` is the teacher's distribution at sequence position ``start + j``
        (``start`` of the record's :class:`RecordEntry`), i.e. over the ``j``-th label
        (completion token, then ``eos``).

        Raises:
            CacheError: the record id is not in the cache.
        """
        entry = self.manifest.records.get(record_id)
        if entry is None:
            raise CacheError(
                f"record {record_id!r} is not in cache {self.directory} "
                f"({len(self.manifest.records)} records); was it made from this dataset?"
            )
        rows = self._shard(entry.shard)
        sl = slice(entry.row_start, entry.row_end)
        return TeacherOutput(
            ids=rows["ids"][sl].unsqueeze(0),
            logprobs=rows["logprobs"][sl].unsqueeze(0),
            tail=rows["tail"][sl].unsqueeze(0),
        )

    def match(self, tokens: torch.Tensor) -> str | None:
        """Return the id of the record whose token sequence is the longest prefix of ``tokens``."""
        digest = hashlib.sha256()
        found = None
        for length, token in enumerate(tokens.to(torch.int32).tolist(), start=1):
            digest.update(int(token).to_bytes(4, "little", signed=True))
            if length in self._lengths:
                found = self._by_sequence.get(digest.hexdigest(), found)
        return found

    def holds(self, tokens: torch.Tensor) -> bool:
        """True when ``tokens`` (``[T]``) is a cached sequence whole: a row at every position."""
        return sequence_sha256(tokens.to(torch.int32).numpy()) in self._by_sequence

    def __call__(self, batch: Batch) -> TeacherOutput:
        """The teacher protocol: :meth:`topk` of the batch at :attr:`serve_k`, on its device."""
        top = self.topk(batch.input_ids.cpu(), batch.attention_mask.cpu(), self.serve_k)
        return top.to(batch.input_ids.device)

    def topk(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int) -> TeacherOutput:
        """Return cached top-``k`` ``[B, T, k]`` for a batch tokenized with the cache's layout.

        Each row's real tokens (``attention_mask == 1``) are matched to a record
        (:meth:`match`); its rows fill their positions. Positions without a cached row
        hold the placeholder ids ``0..k-1`` with log-probs and tail ``log(1/(k+1))``
        and ``mask`` false there (the loss masks them by their labels anyway).

        Raises:
            CacheError: ``k`` exceeds the cached ``k``, or a row matches no record.
        """
        if not 1 <= k <= self.k:
            raise CacheError(f"cache {self.directory} holds top-{self.k}; cannot serve k={k}")
        batch, length = input_ids.shape
        fill = -float(np.log(k + 1))
        ids = torch.arange(k).expand(batch, length, k).clone()
        logprobs = torch.full((batch, length, k), fill)
        tail = torch.full((batch, length), fill)
        mask = torch.zeros(batch, length, dtype=torch.bool)
        for b in range(batch):
            where = attention_mask[b].nonzero().squeeze(-1)
            record_id = self.match(input_ids[b, where])
            if record_id is None:
                raise CacheError(
                    f"row {b} of the batch ({where.numel()} tokens) matches no sequence in "
                    f"cache {self.directory}: tokenize the records with the teacher's "
                    "tokenizer and the cache's bos/eos/max_length settings "
                    "(kd_train.data.tokenization), or look them up with for_record"
                )
            rows_ids, rows_logprobs, rows_tail = truncate_topk(
                self.for_record(record_id), k
            ).topk_parts()
            start = self.manifest.records[record_id].start
            positions = where[start : start + rows_ids.shape[1]]
            ids[b, positions] = rows_ids[0]
            logprobs[b, positions] = rows_logprobs[0]
            tail[b, positions] = rows_tail[0]
            mask[b, positions] = True
        return TeacherOutput(ids=ids, logprobs=logprobs, tail=tail, mask=mask)
