"""``kd-train cache-logits``: run a teacher once over a dataset and cache its top-k.

The cache layout (tokenization, stored positions, shards, manifest) is described in
:mod:`kd_train.teachers.cached`; read it back with
:class:`~kd_train.teachers.cached.CachedTeacher`.

Records are taken ``--shard-size`` at a time; shard ``i`` holds records
``[i*N, (i+1)*N)``. Each shard is written atomically, then ``manifest.partial.json`` is
rewritten (atomically) with its SHA-256; ``manifest.json`` is written last. A killed run
is resumed by running the same command again: shards listed in the partial manifest whose
hash still matches are kept, the rest are recomputed. Batches never cross a shard, so a
resumed cache is byte-identical to an uninterrupted one on the same machine.

With ``--shard I/N`` (or under ``torchrun``) the run is worker ``I`` of ``N``: it computes
the shards ``j`` with ``j % N == I`` into ``OUT/worker-I-of-N/``, resumable in the same way;
``kd-train merge-shards --cache OUT`` joins the workers' parts (:mod:`kd_train.shards`).

Example::

    kd-train cache-logits --teacher teacher/ --data train.jsonl --out cache/ --k 16
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kd_train.cliutil import output_dir, progress_bar
from kd_train.errors import KDTrainError

if TYPE_CHECKING:
    from kd_train.data.schema import KDRecord
    from kd_train.data.tokenization import TokenizeConfig
    from kd_train.shards import WorkerShard
    from kd_train.teachers.base import TeacherOutput
    from kd_train.teachers.cached import CacheConfig, Manifest
    from kd_train.teachers.hf import HFTeacher

#: The names ``--dtype`` accepts: the keys of :data:`kd_train.teachers.hf.DTYPES` (spelled
#: out so that ``--help`` does not import torch; a test keeps the two equal).
DTYPE_NAMES = ("bfloat16", "float16", "float32")


def register(subparsers: Any) -> None:
    """Add the ``cache-logits`` subcommand."""
    parser = subparsers.add_parser(
        "cache-logits",
        help="run a teacher once over a dataset and store its top-k log-probs",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--teacher", required=True, type=Path, help="teacher model directory")
    parser.add_argument("--data", required=True, type=Path, help="KD dataset (JSONL)")
    parser.add_argument("--out", required=True, type=output_dir, help="cache directory to write")
    parser.add_argument("--k", required=True, type=int, help="top-k entries per position")
    parser.add_argument("--shard-size", type=int, default=1024, help="records per shard")
    parser.add_argument(
        "--max-length", type=int, default=2048, help="truncate sequences to L tokens"
    )
    parser.add_argument("--no-bos", action="store_true", help="do not prepend the bos token")
    parser.add_argument("--no-eos", action="store_true", help="do not append the eos token")
    parser.add_argument("--batch-size", type=int, default=8, help="records per forward pass")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="float32")
    parser.add_argument("--device", default="cpu", help="e.g. cpu or cuda:0")
    parser.add_argument("--gguf-file", default=None, help="GGUF file name inside --teacher")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run model code shipped with the teacher (only if you trust it)",
    )
    parser.add_argument(
        "--student-tokenizer",
        type=Path,
        default=None,
        help="a student tokenizer directory: make a cross-tokenizer cache for it "
        "(loss.cross_tokenizer)",
    )
    parser.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="be worker I (0-based) of N: cache every N-th shard into OUT/worker-I-of-N/ "
        "(default under torchrun: RANK/WORLD_SIZE); join them with kd-train merge-shards",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build (or finish) the cache, or a worker's part of it, and print a JSON summary."""
    import os

    from kd_train.data.jsonl import read_records
    from kd_train.data.tokenization import TokenizeConfig
    from kd_train.shards import shard_from
    from kd_train.teachers.fingerprint import dataset_fingerprint
    from kd_train.teachers.hf import HFTeacher

    for name, least in (("k", 1), ("shard_size", 1), ("batch_size", 1), ("max_length", 2)):
        value = getattr(args, name)
        if value < least:
            raise KDTrainError(f"--{name.replace('_', '-')} must be >= {least}, got {value}")
    if not args.data.is_file():
        raise KDTrainError(f"dataset {args.data} does not exist; pass a JSONL file with --data")
    require_device(args.device)
    worker = shard_from(args.shard, os.environ)
    records = list(read_records(args.data))
    student_tokenizer = None
    if args.student_tokenizer is not None:
        from kd_train.teachers.tokens import load_tokenizer

        if not args.student_tokenizer.is_dir():
            raise KDTrainError(
                f"--student-tokenizer {args.student_tokenizer} is not a directory; give the "
                "student's saved tokenizer (or model) directory"
            )
        try:
            student_tokenizer = load_tokenizer(args.student_tokenizer)
        except (OSError, ValueError) as exc:
            raise KDTrainError(
                f"--student-tokenizer: cannot load a tokenizer from {args.student_tokenizer} "
                f"({exc})"
            ) from None
    teacher = HFTeacher.from_pretrained(
        args.teacher,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        gguf_file=args.gguf_file,
    )
    manifest = build_cache(
        teacher,
        records,
        args.out,
        k=args.k,
        dataset_fingerprint=dataset_fingerprint(args.data),
        shard_size=args.shard_size,
        tokenize=TokenizeConfig(
            max_length=args.max_length, add_bos=not args.no_bos, add_eos=not args.no_eos
        ),
        batch_size=args.batch_size,
        progress=not args.no_progress,
        student_tokenizer=student_tokenizer,
        worker=worker,
    )
    summary = {
        "out": str(args.out if worker is None else args.out / worker.name),
        "records": len(manifest.records),
        "shards": len(manifest.shards),
        "positions": manifest.positions,
        "bytes_per_token": round(manifest.bytes_per_token, 3),
    }
    print(json.dumps(summary))
    return 0


def require_device(name: str) -> None:
    """Refuse a ``--device`` torch cannot use here (an unknown name, CUDA without a GPU).

    Raises:
        kd_train.errors.KDTrainError: naming the device and what would work.
    """
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise KDTrainError(
            f"--device {name!r} is not a device; use cpu, cuda, cuda:N or mps"
        ) from None
    usable = {
        "cpu": True,
        "cuda": torch.cuda.is_available()
        and (device.index is None or device.index < torch.cuda.device_count()),
        "mps": torch.backends.mps.is_available(),
    }
    if not usable.get(device.type, False):
        raise KDTrainError(f"--device {name!r} is not available on this machine; use cpu")


def encode_for_cache(
    tokenizer: Any, record: KDRecord, config: TokenizeConfig
) -> tuple[list[int], int]:
    """Tokenize ``record`` as the trainer does; return ``(token_ids, start)``.

    ``start`` is the position of the first cached row, ``max(h - 1, 0)`` for the first
    label position ``h`` (the sequence length minus one when nothing is labelled). Any
    ``teacher_topk`` in the record is ignored: the cache replaces it.
    """
    from kd_train.data.tokenization import IGNORE_INDEX, encode_record

    example = encode_record(replace(record, teacher_topk=None), tokenizer, config)
    tokens = example.input_ids.tolist()
    labelled = (example.labels != IGNORE_INDEX).nonzero()
    first = int(labelled[0, 0]) if labelled.numel() else len(tokens)
    return tokens, max(min(first, len(tokens)) - 1, 0)


def build_cache(
    teacher: HFTeacher,
    records: Iterable[KDRecord],
    out: str | Path,
    *,
    k: int,
    dataset_fingerprint: str,
    shard_size: int = 1024,
    tokenize: TokenizeConfig | None = None,
    batch_size: int = 8,
    progress: bool = True,
    student_tokenizer: Any = None,
    worker: WorkerShard | None = None,
) -> Manifest:
    """Run ``teacher`` over ``records`` and write (or finish) a cache in ``out``.

    Args:
        teacher: a loaded :class:`~kd_train.teachers.hf.HFTeacher` with its tokenizer.
        records: the dataset's records, in order (the same order on a resume).
        out: the cache directory.
        k: entries per position.
        dataset_fingerprint: fingerprint of the dataset ``records`` come from.
        shard_size: records per shard.
        tokenize: the trainer's tokenization settings (default: ``TokenizeConfig()``);
            ``truncation`` is always ``"truncate"`` here.
        batch_size: records per forward pass.
        progress: show a tqdm bar over records.
        student_tokenizer: a student's tokenizer other than the teacher's: the cache is
            then a cross-tokenizer cache for it (``cross.safetensors``, both tokenizers
            fingerprinted; :mod:`kd_train.teachers.cache_format`).
        worker: be this worker of several (:mod:`kd_train.shards`): compute the shards
            ``j`` it owns, into ``out/worker-I-of-N/`` (worker 0 also writes the
            cross-tokenizer index); ``kd-train merge-shards`` joins the workers' parts.

    Returns:
        The manifest that was written.

    Raises:
        CacheError: ``out`` holds a cache made with other settings.
        KDTrainError: ``k`` is out of range or there are no records.
    """
    from kd_train.data.tokenization import TokenizeConfig
    from kd_train.teachers.cached import (
        MANIFEST,
        PARTIAL_MANIFEST,
        CacheConfig,
        Manifest,
        ids_dtype_for,
    )
    from kd_train.teachers.fingerprint import tokenizer_fingerprint

    if teacher.tokenizer is None:
        raise KDTrainError("the teacher has no tokenizer; load it with HFTeacher.from_pretrained")
    if not 1 <= k <= teacher.vocab_size:
        raise KDTrainError(f"--k must be in 1..{teacher.vocab_size} (vocab size), got {k}")
    root = Path(out) if worker is None else Path(out) / worker.name
    root.mkdir(parents=True, exist_ok=True)
    tokenize = replace(tokenize or TokenizeConfig(), truncation="truncate")
    config = CacheConfig(
        k=k,
        vocab_size=teacher.vocab_size,
        tokenizer_fingerprint=tokenizer_fingerprint(teacher.tokenizer),
        dataset_fingerprint=dataset_fingerprint,
        teacher_fingerprint=teacher.fingerprint,
        shard_size=shard_size,
        max_length=tokenize.max_length,
        add_bos=tokenize.add_bos,
        add_eos=tokenize.add_eos,
        ids_dtype=ids_dtype_for(teacher.vocab_size),
        student_tokenizer_fingerprint=(
            None if student_tokenizer is None else tokenizer_fingerprint(student_tokenizer)
        ),
    )
    if (root / MANIFEST).is_file():
        done = Manifest.read(root / MANIFEST)
        _require_same_config(root / MANIFEST, done.config, config)
        return done
    records = list(records)
    if not records:
        raise KDTrainError("the dataset has no records; nothing to cache")
    # Shard j holds records [j*size, (j+1)*size); a worker computes the shards it owns.
    owned = [j for j in range(-(-len(records) // shard_size)) if worker is None or worker.owns(j)]
    manifest = _resumable_progress(root, config, owned)
    for stale in root.glob(".*.tmp"):  # temp files of a killed atomic write
        stale.unlink()
    if worker is not None:
        from kd_train.shards import WORKER_FILE, write_worker_file

        write_worker_file(root / WORKER_FILE, worker, records=len(records))
    todo = owned[len(manifest.shards) :]
    total = sum(len(records[j * shard_size : (j + 1) * shard_size]) for j in owned)
    bar = progress_bar(total=total, enabled=progress, unit="rec", desc="cache-logits")
    with bar:
        bar.update(total - sum(len(records[j * shard_size : (j + 1) * shard_size]) for j in todo))
        for j in todo:
            shard = records[j * shard_size : (j + 1) * shard_size]
            _write_one_shard(teacher, shard, root, j, manifest, batch_size)
            manifest.write(root, PARTIAL_MANIFEST)
            bar.update(len(shard))
    if student_tokenizer is not None and (worker is None or worker.index == 0):
        from kd_train.teachers.cross import write_cross_index

        manifest.cross = write_cross_index(
            root, records, teacher.tokenizer, student_tokenizer, tokenize
        )
    manifest.write(root, MANIFEST)
    with contextlib.suppress(FileNotFoundError):
        (root / PARTIAL_MANIFEST).unlink()
    return manifest


def _require_same_config(path: Path, found: CacheConfig, wanted: CacheConfig) -> None:
    from kd_train.teachers.cached import CacheError

    diffs = [
        f"{key}: {value!r} there, {asdict(wanted)[key]!r} now"
        for key, value in asdict(found).items()
        if asdict(wanted)[key] != value
    ]
    if diffs:
        raise CacheError(
            f"{path} belongs to a cache made with other settings ({'; '.join(diffs)}); "
            "choose another --out directory or delete this one"
        )


def _resumable_progress(root: Path, config: CacheConfig, owned: list[int]) -> Manifest:
    """The partial manifest's valid prefix of shards, or an empty manifest.

    ``owned`` are the indices of the shards this run computes, in order (all of them
    unless it is a worker of several).
    """
    from kd_train.teachers.cached import PARTIAL_MANIFEST, CorruptShardError, Manifest, verify_shard

    path = root / PARTIAL_MANIFEST
    if not path.is_file():
        return Manifest(config)
    partial = Manifest.read(path)
    _require_same_config(path, partial.config, config)
    kept = Manifest(config)
    for index, entry in zip(owned, partial.shards, strict=False):
        try:
            verify_shard(root, entry)
        except CorruptShardError:
            break
        kept.shards.append(entry)
        kept.records.update((rid, r) for rid, r in partial.records.items() if r.shard == index)
    return kept


def _write_one_shard(
    teacher: HFTeacher,
    records: list[KDRecord],
    root: Path,
    index: int,
    manifest: Manifest,
    batch_size: int,
) -> None:
    """Compute one shard's rows, write it, and add it and its records to ``manifest``."""
    import torch

    from kd_train.data.tokenization import TokenizeConfig
    from kd_train.teachers.base import TeacherOutput
    from kd_train.teachers.cached import RecordEntry, sequence_sha256, write_shard

    config = manifest.config
    tokenize = TokenizeConfig(
        max_length=config.max_length, add_bos=config.add_bos, add_eos=config.add_eos
    )
    parts: list[TeacherOutput] = []
    row = 0
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        encoded = [encode_for_cache(teacher.tokenizer, r, tokenize) for r in batch]
        for record, top, (tokens, first) in zip(
            batch, _teacher_rows(teacher, encoded, config.k), encoded, strict=True
        ):
            n = int(top.positions[0])
            manifest.records[record.id] = RecordEntry(
                shard=index,
                row_start=row,
                row_end=row + n,
                start=first,
                length=len(tokens),
                tokens_sha256=sequence_sha256(tokens),
            )
            parts.append(top)
            row += n
    rows = TeacherOutput(
        ids=torch.cat([p.ids for p in parts if p.ids is not None]),
        logprobs=torch.cat([p.logprobs for p in parts if p.logprobs is not None]),
        tail=torch.cat([p.tail for p in parts if p.tail is not None]),
    )
    manifest.shards.append(write_shard(root, index, rows, config.ids_dtype))


def _teacher_rows(
    teacher: HFTeacher, encoded: list[tuple[list[int], int]], k: int
) -> list[TeacherOutput]:
    """One right-padded forward pass; each record's rows ``[start, length-1)``."""
    import torch

    from kd_train.teachers.cached import topk_with_tail

    width = max(1, *(len(tokens) for tokens, _ in encoded))
    pad = teacher.tokenizer.pad_token_id or 0
    input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for b, (tokens, _) in enumerate(encoded):
        input_ids[b, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        mask[b, : len(tokens)] = 1
    log_probs = teacher.log_probs(input_ids, mask).cpu()
    out = []
    for b, (tokens, first) in enumerate(encoded):
        out.append(topk_with_tail(log_probs[b, first : max(len(tokens) - 1, first)], k))
    return out
