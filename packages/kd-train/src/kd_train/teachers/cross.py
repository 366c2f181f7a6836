"""A teacher with its own tokenizer: it reads each record's text tokenised its own way.

The student's batches hold the student's tokens. :class:`CrossTokenizerTeacher` looks up
the records of a batch by id, runs its model on the *teacher's* tokenisation of the same
records (``bos + prompt + completion + eos``, :func:`~kd_train.data.tokenization.encode_record`)
and returns the teacher's logits ``[B, T_t, V_t]`` together with the groups of tokens that
make up the same text on both sides (:mod:`kd_train.data.alignment`), in
``TeacherOutput.cross``. Both
tokenisations and their alignment are computed once, when the run starts
(:func:`pair_records`).

>>> import tempfile
>>> from kd_train.data import KDRecord, TokenizeConfig
>>> from kd_train.teachers.cross import pair_records
>>> from kd_train.testing import train_tiny_tokenizer
>>> student, teacher = train_tiny_tokenizer(vocab_size=270), train_tiny_tokenizer(vocab_size=330)
>>> pairs = pair_records([KDRecord("r", "Q: ", "the quick fox")], student, teacher,
...                      TokenizeConfig(max_length=64))
>>> pairs["r"].alignment.unaligned  # every completion token, eos included, is in a group
0
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors

from kd_train.atomic import atomic_write_bytes
from kd_train.data.alignment import Alignment, CrossTokens, GroupIndex, align_examples
from kd_train.data.batching import Batch, collate
from kd_train.data.schema import KDRecord
from kd_train.data.tokenization import (
    IGNORE_INDEX,
    Example,
    TokenizeConfig,
    encode_record,
    tokenize_completion,
)
from kd_train.data.vocab_map import VocabMap, build_vocab_map
from kd_train.errors import KDTrainError
from kd_train.teachers.base import TeacherOutput
from kd_train.teachers.cache_format import CacheError, ShardEntry
from kd_train.teachers.cached import CachedTeacher

#: The file of a cross-tokenizer cache that holds the teacher's tokens and offsets.
CROSS_FILE = "cross.safetensors"
#: The tensors of :data:`CROSS_FILE`.
CROSS_TENSORS = ("tokens", "token_bounds", "offsets", "offset_bounds", "map_student", "map_teacher")


@dataclass(frozen=True)
class PairedRecord:
    """One record as the teacher reads it, and its alignment with the student's tokens.

    Attributes:
        teacher: the teacher's example of the record.
        alignment: the groups, in both sides' positions.
    """

    teacher: Example
    alignment: Alignment


def pair_records(
    records: Iterable[KDRecord],
    student_tokenizer: Any,
    teacher_tokenizer: Any,
    config: TokenizeConfig,
) -> dict[str, PairedRecord]:
    """Tokenise every record with both tokenizers and align them; keyed by record id.

    Both sides use ``config`` (lengths, ``bos``/``eos``); the student's side is the example
    :func:`~kd_train.data.tokenization.encode_record` makes for training. The teacher's
    stored top-k, if any, is not read (it is in the student's tokens).
    """
    out: dict[str, PairedRecord] = {}
    for record in records:
        plain = dataclasses.replace(record, teacher_topk=None)
        student = encode_record(plain, student_tokenizer, config)
        teacher = encode_record(plain, teacher_tokenizer, config)
        alignment = align_examples(
            student,
            tokenize_completion(record.completion, student_tokenizer)[1],
            teacher,
            tokenize_completion(record.completion, teacher_tokenizer)[1],
            student_eos=student_tokenizer.eos_token_id if config.add_eos else None,
            teacher_eos=teacher_tokenizer.eos_token_id if config.add_eos else None,
        )
        out[record.id] = PairedRecord(teacher, alignment)
    return out


class CrossTokenizerTeacher:
    """A teacher (``hf`` or ``cached``) on its own tokenisation of each batch's records.

    Args:
        teacher: the model, an :class:`~kd_train.teachers.hf.HFTeacher` (anything with
            ``logits(input_ids, attention_mask)`` and ``vocab_size``), or a cross-tokenizer
            :class:`~kd_train.teachers.cached.CachedTeacher`, or a top-k teacher such as
            :class:`~kd_train.teachers.http.HTTPTeacher` with the teacher's tokenizer
            (top-k rows with the tail spread evenly over the other ids,
            :func:`dense_log_probs`; groups over positions the endpoint could not score
            are left out and counted).
        pairs: :func:`pair_records` of every record the batches may hold.
        pad_id: the teacher tokenizer's padding id.
        vocab_map: the vocabulary map of the two tokenizers.
    """

    def __init__(
        self,
        teacher: Any,
        pairs: dict[str, PairedRecord],
        pad_id: int,
        vocab_map: VocabMap | None = None,
    ) -> None:
        self.teacher = teacher
        self.pairs = pairs
        self.pad_id = pad_id
        #: The one-to-one map of ids with the same text (``align`` reads it).
        self.vocab_map = vocab_map

    @property
    def vocab_size(self) -> int:
        """The teacher's vocabulary size."""
        return int(self.teacher.vocab_size)

    def __call__(self, batch: Batch) -> TeacherOutput:
        """The teacher's logits of the batch's records, with the alignment in ``cross``.

        Raises:
            kd_train.errors.KDTrainError: a record of the batch was not paired when the run started.
        """
        missing = [r for r in batch.record_ids if r not in self.pairs]
        if missing:
            raise KDTrainError(
                f"record {missing[0]!r} has no teacher tokenisation; the cross-tokenizer "
                "teacher pairs the records of data.train and data.eval when the run starts"
            )
        paired = [self.pairs[r] for r in batch.record_ids]
        inputs = collate([p.teacher for p in paired], self.pad_id)
        scored: torch.Tensor | None = None  # positions with a teacher distribution
        if isinstance(self.teacher, CachedTeacher):
            logits = cached_log_probs(self.teacher, batch.record_ids, inputs.input_ids.shape[1])
        elif hasattr(self.teacher, "logits"):
            logits = self.teacher.logits(inputs.input_ids, inputs.attention_mask)
        else:  # a top-k teacher (http)
            top = self.teacher(inputs)
            logits = dense_log_probs(top, self.vocab_size)
            scored = top.mask
        s_ranges: list[tuple[int, int, int]] = []
        t_ranges: list[tuple[int, int, int]] = []
        unscored = 0
        for row, pair in enumerate(paired):
            for s0, s1, t0, t1 in pair.alignment.groups.tolist():
                if scored is not None and not bool(scored[row, t0 - 1 : t1 - 1].all()):
                    unscored += s1 - s0  # the endpoint gave no distribution there
                    continue
                s_ranges.append((row, s0, s1))
                t_ranges.append((row, t0, t1))
        device = batch.input_ids.device
        cross = CrossTokens(
            inputs.input_ids,
            GroupIndex.from_ranges(s_ranges),
            GroupIndex.from_ranges(t_ranges),
            sum(p.alignment.unaligned for p in paired) + unscored,
        )
        return TeacherOutput(logits=logits.to(device), cross=cross.to(device))


def first_unpaired(examples: Iterable[Example], pairs: dict[str, PairedRecord]) -> str | None:
    """The id of the first example that has no pair (``None``: all are paired)."""
    return next((e.record_id for e in examples if e.record_id not in pairs), None)


def unaligned_tokens(pairs: dict[str, PairedRecord]) -> tuple[int, int]:
    """``(records, tokens)``: how many records have student tokens in no group, and how many."""
    counts = [p.alignment.unaligned for p in pairs.values() if p.alignment.unaligned]
    return len(counts), sum(counts)


__all__ = [
    "CROSS_FILE",
    "CrossTokenizerTeacher",
    "PairedRecord",
    "cached_log_probs",
    "cached_pairs",
    "dense_log_probs",
    "first_unpaired",
    "pair_records",
    "unaligned_tokens",
    "write_cross_index",
]


def dense_log_probs(top: TeacherOutput, vocab: int) -> torch.Tensor:
    r"""Dense log-probs ``[..., V]`` from a top-k output: the tail spread over the other ids.

    Each of the :math:`V - k` ids outside the top-k gets
    :math:`\log(\text{tail}) - \log(V - k)` (the stored tail, or the derived one).
    """
    ids, logprobs, tail = top.topk_parts()
    spread = tail - math.log(max(vocab - ids.shape[-1], 1))
    out = spread.unsqueeze(-1).expand(*spread.shape, vocab).clone()
    return out.scatter_(-1, ids, logprobs.float())


def cached_log_probs(cache: CachedTeacher, record_ids: list[str], width: int) -> torch.Tensor:
    r"""Dense teacher log-probs ``[B, width, V]`` rebuilt from a cache's top-k and tail.

    The top-k entries keep their log-probs; the tail mass is spread evenly over the other
    :math:`V - k` ids, :math:`\log(\text{tail}) - \log(V - k)` each. Positions without a
    cached row (prompt, padding) are uniform: no group reads them.
    """
    vocab = cache.vocab_size
    out = torch.full((len(record_ids), width, vocab), -math.log(vocab))
    for b, record_id in enumerate(record_ids):
        block = dense_log_probs(cache.for_record(record_id), vocab)[0]
        start = cache.manifest.records[record_id].start
        out[b, start : start + block.shape[0]] = block
    return out


def write_cross_index(
    directory: Path,
    records: list[KDRecord],
    teacher_tokenizer: Any,
    student_tokenizer: Any,
    config: TokenizeConfig,
) -> ShardEntry:
    """Write :data:`CROSS_FILE`: each record's teacher tokens and completion offsets.

    Also the teacher's ``eos`` id and the vocabulary map of the two tokenizers, so that a
    run can align the cache with the student's tokens without the teacher's tokenizer.
    Returns its entry for the manifest (name, SHA-256, records, bytes).
    """
    tokens: list[int] = []
    offsets: list[list[int]] = []
    token_bounds, offset_bounds = [0], [0]
    for record in records:
        plain = dataclasses.replace(record, teacher_topk=None)
        tokens += encode_record(plain, teacher_tokenizer, config).input_ids.tolist()
        offsets += tokenize_completion(record.completion, teacher_tokenizer)[1].tolist()
        token_bounds.append(len(tokens))
        offset_bounds.append(len(offsets))
    pairs = build_vocab_map(student_tokenizer, teacher_tokenizer)
    tensors = {
        "tokens": torch.tensor(tokens, dtype=torch.int64),
        "token_bounds": torch.tensor(token_bounds, dtype=torch.int64),
        "offsets": torch.tensor(offsets, dtype=torch.int64).reshape(-1, 2),
        "offset_bounds": torch.tensor(offset_bounds, dtype=torch.int64),
        "map_student": pairs.student,
        "map_teacher": pairs.teacher,
    }
    eos = teacher_tokenizer.eos_token_id
    # One metadata key: safetensors writes several in no fixed order, and the index must be
    # byte-identical from run to run (and from a sharded build merged).
    index = {"eos": -1 if eos is None else eos, "records": [r.id for r in records]}
    data = save_safetensors(tensors, metadata={"index": json.dumps(index, sort_keys=True)})
    atomic_write_bytes(directory / CROSS_FILE, data)
    digest = hashlib.sha256(data).hexdigest()
    return ShardEntry(file=CROSS_FILE, sha256=digest, rows=len(records), bytes=len(data))


def cached_pairs(
    cache: CachedTeacher, examples: Iterable[Example], records: Iterable[KDRecord], student: Any
) -> tuple[dict[str, PairedRecord], VocabMap]:
    """Pair the student's examples with a cross-tokenizer cache's teacher tokens.

    Returns the pairs and the cache's vocabulary map.

    Raises:
        CacheError: the cache is no cross-tokenizer cache, or lacks one of the records.
    """
    if cache.manifest.cross is None:
        raise CacheError(
            f"cache {cache.directory} was made for the teacher's own tokenizer; for "
            "loss.cross_tokenizer build it with kd-train cache-logits --student-tokenizer"
        )
    path = cache.directory / CROSS_FILE
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            with_meta = {name: handle.get_tensor(name) for name in CROSS_TENSORS}
        stored = json.loads(meta["index"])
        index = {rid: i for i, rid in enumerate(stored["records"])}
        eos = int(stored["eos"])
    except (OSError, KeyError, ValueError, TypeError, SafetensorError) as exc:
        raise CacheError(f"{path}: not a cross-tokenizer index ({exc}); rebuild the cache") from exc
    config = cache.manifest.config
    text = {r.id: r.completion for r in records}
    out: dict[str, PairedRecord] = {}
    for example in examples:
        i = index.get(example.record_id)
        entry = cache.manifest.records.get(example.record_id)
        if i is None or entry is None:
            raise CacheError(
                f"record {example.record_id!r} is not in cache {cache.directory}; was it "
                "made from this dataset?"
            )
        a, b = with_meta["token_bounds"][i : i + 2].tolist()
        tokens = with_meta["tokens"][a:b]
        c, d = with_meta["offset_bounds"][i : i + 2].tolist()
        labels = tokens.clone()
        labels[: entry.start + 1] = IGNORE_INDEX
        ends = config.add_eos and eos >= 0 and int(tokens[-1]) == eos
        teacher = Example(example.record_id, tokens, labels, {}, truncated=not ends)
        alignment = align_examples(
            example,
            tokenize_completion(text[example.record_id], student)[1],
            teacher,
            with_meta["offsets"][c:d],
            student_eos=student.eos_token_id if config.add_eos else None,
            teacher_eos=eos if ends else None,
        )
        out[example.record_id] = PairedRecord(teacher, alignment)
    pairs = VocabMap(student=with_meta["map_student"], teacher=with_meta["map_teacher"])
    return out, pairs
