"""Teacher work split over worker processes (``--shard I/N`` or ``torchrun``), then merged.

Worker ``I`` of ``N`` takes the items ``j`` with ``j % N == I``: for ``kd-train
cache-logits`` the cache shards (``--shard-size`` records each), for ``kd-train generate``
the prompts. Each worker writes its own output, resumable like a single run:

- ``cache-logits --out CACHE --shard I/N`` writes ``CACHE/worker-I-of-N/``: the shard files
  it owns (named as in the full cache), its own ``manifest.json`` and ``worker.json``;
- ``generate --out OUT.jsonl --shard I/N`` writes ``OUT.worker-I-of-N.jsonl`` (with its
  ``.teacher.json`` and ``.quarantine.jsonl`` beside it).

``kd-train merge-shards`` then makes one cache or dataset whose files are byte-identical to
a single-process run on the same input (:func:`merge_cache`, :func:`merge_dataset`), and
refuses a missing, duplicated, unfinished or mismatched worker output, naming it.

>>> from kd_train.shards import WorkerShard
>>> shard = WorkerShard.parse("1/3")
>>> shard.name, [j for j in range(7) if shard.owns(j)]
('worker-1-of-3', [1, 4])
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kd_train.atomic import atomic_write_bytes, atomic_write_text
from kd_train.errors import KDTrainError

if TYPE_CHECKING:
    from kd_train.teachers.cache_format import Manifest

#: The file in a cache worker's directory that says which worker made it.
WORKER_FILE = "worker.json"
#: Format tag of :data:`WORKER_FILE` and of a generate worker's ``.worker.json``.
WORKER_FORMAT = "kd-train-worker/1"
_NAME = re.compile(r"worker-(\d+)-of-(\d+)")


class ShardError(KDTrainError):
    """A ``--shard`` value is invalid, or worker outputs cannot be merged."""


@dataclass(frozen=True)
class WorkerShard:
    """Worker ``index`` (0-based) of ``count``: it owns the items ``j % count == index``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ShardError(
                f"--shard {self.index}/{self.count}: need N >= 1 and 0 <= I < N "
                "(I is the 0-based worker index, N the number of workers)"
            )

    @classmethod
    def parse(cls, text: str) -> WorkerShard:
        """Read ``"I/N"``; :class:`ShardError` for anything else or ``I >= N``."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if match is None:
            raise ShardError(f"--shard {text!r} is not I/N (e.g. 0/2 for the first of two workers)")
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def name(self) -> str:
        """The output name of this worker: ``worker-I-of-N``."""
        return f"worker-{self.index}-of-{self.count}"

    def owns(self, item: int) -> bool:
        """Whether item ``item`` (a cache shard, a prompt) is this worker's."""
        return item % self.count == self.index


def shard_from(flag: str | None, env: Mapping[str, str]) -> WorkerShard | None:
    """The worker shard from ``--shard`` and/or ``torchrun``'s ``RANK``/``WORLD_SIZE``.

    ``env`` is the process environment, passed in by the command line layer. A run under
    ``torchrun`` with ``WORLD_SIZE`` 1 and no flag is a single run (``None``).

    >>> shard_from(None, {"RANK": "1", "WORLD_SIZE": "2"})
    WorkerShard(index=1, count=2)
    >>> shard_from("0/2", {"RANK": "1", "WORLD_SIZE": "2"})
    Traceback (most recent call last):
    ...
    kd_train.shards.ShardError: --shard 0/2 disagrees with torchrun's RANK=1 WORLD_SIZE=2; ...
    """
    given = None if flag is None else WorkerShard.parse(flag)
    rank, world = env.get("RANK"), env.get("WORLD_SIZE")
    if rank is None or world is None:
        return given
    try:
        launched = WorkerShard(int(rank), int(world))
    except ValueError:
        raise ShardError(
            f"RANK={rank!r} WORLD_SIZE={world!r} are not integers; run under torchrun"
        ) from None
    if given is not None and given != launched:
        raise ShardError(
            f"--shard {flag} disagrees with torchrun's RANK={rank} WORLD_SIZE={world}; "
            "give one or the other"
        )
    if given is None and launched.count == 1:
        return None
    return launched


def write_worker_file(path: Path, shard: WorkerShard, **inputs: object) -> None:
    """Write the worker record ``path``: its index, count and what its input was."""
    body = {"format": WORKER_FORMAT, "index": shard.index, "count": shard.count, **inputs}
    atomic_write_text(path, json.dumps(body, indent=1, sort_keys=True) + "\n")


def _read_worker_file(path: Path) -> dict[str, object]:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShardError(
            f"{path} is missing: {path.parent if path.name == WORKER_FILE else path} "
            "was not made by kd-train --shard; remove it"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ShardError(f"{path}: unreadable worker record ({exc})") from None
    if not isinstance(body, dict) or body.get("format") != WORKER_FORMAT:
        raise ShardError(f"{path}: not a kd-train worker record")
    return body


def _workers(found: dict[Path, Path], what: str) -> dict[int, tuple[Path, dict[str, object]]]:
    """Check the worker outputs ``found`` (output -> worker record) form one full set 0..N-1."""
    if not found:
        raise ShardError(f"no worker outputs ({what}) to merge")
    by_index: dict[int, tuple[Path, dict[str, object]]] = {}
    counts: dict[int, Path] = {}
    for output, record_path in sorted(found.items()):
        body = _read_worker_file(record_path)
        index, count = body.get("index"), body.get("count")
        match = _NAME.search(output.name)
        if match is None or (int(match.group(1)), int(match.group(2))) != (index, count):
            raise ShardError(
                f"{output}: its worker record says worker {index} of {count}, its name "
                "another; it was renamed or copied: remove it and rerun that worker"
            )
        if not isinstance(index, int) or not isinstance(count, int):
            raise ShardError(f"{record_path}: index and count must be integers")
        counts.setdefault(count, output)
        if len(counts) > 1:
            named = ", ".join(f"{path} (N={n})" for n, path in sorted(counts.items()))
            raise ShardError(f"worker outputs of runs with different N: {named}; keep one run's")
        if index in by_index:
            raise ShardError(
                f"worker {index} is duplicated: {by_index[index][0]} and {output}; remove "
                "the one from the other run"
            )
        by_index[index] = (output, body)
    (count,) = counts
    missing = [i for i in range(count) if i not in by_index]
    if missing:
        names = ", ".join(WorkerShard(i, count).name for i in missing)
        raise ShardError(f"worker output {names} is missing ({what}); run that worker first")
    return by_index


def _require_equal(key: str, values: dict[Path, object]) -> None:
    distinct = {json.dumps(v, sort_keys=True) for v in values.values()}
    if len(distinct) > 1:
        listed = "; ".join(f"{path}: {value!r}" for path, value in values.items())
        raise ShardError(
            f"the workers were run on different inputs or settings ({key} differs: {listed}); "
            "rerun them all with the same arguments"
        )


def merge_cache(out: str | Path) -> Manifest:
    """Merge the cache workers' directories in ``out`` into one cache there.

    The shard files are copied into ``out``, the manifest is rebuilt in the single run's
    order and written last, then the worker directories are removed. Running it again
    after a kill finishes the job.

    Raises:
        ShardError: a worker directory is missing, duplicated, unfinished, or made from
            other data, teacher or settings than the others (named in the message).
    """
    from kd_train.teachers.cache_format import MANIFEST, Manifest, shard_name, verify_shard

    root = Path(out)
    dirs = {p: p / WORKER_FILE for p in root.glob("worker-*-of-*") if p.is_dir()}
    if not dirs and (root / MANIFEST).is_file():
        return Manifest.read(root / MANIFEST)  # merged already
    workers = _workers(dirs, f"worker-I-of-N directories in {root}")
    manifests: dict[int, Manifest] = {}
    for index, (path, _body) in workers.items():
        if not (path / MANIFEST).is_file():
            raise ShardError(
                f"worker output {path} is unfinished (no {MANIFEST}); rerun kd-train "
                f"cache-logits --shard {index}/{len(workers)} with the same arguments"
            )
        manifests[index] = Manifest.read(path / MANIFEST)
    _require_equal("records", {path: body.get("records") for path, body in workers.values()})
    _require_equal("config", {workers[i][0]: asdict(m.config) for i, m in manifests.items()})
    first = manifests[0]
    total = workers[0][1].get("records")
    if not isinstance(total, int):
        raise ShardError(f"{workers[0][0] / WORKER_FILE}: 'records' must be an integer")
    n_shards = -(-total // first.config.shard_size)
    merged = Manifest(first.config, cross=first.cross)
    for index, manifest in manifests.items():
        path = workers[index][0]
        owned = [shard_name(j) for j in range(n_shards) if j % len(workers) == index]
        if [s.file for s in manifest.shards] != owned:
            raise ShardError(
                f"worker output {path} holds shards {[s.file for s in manifest.shards]}, "
                f"not its share {owned}; rerun that worker"
            )
        for entry in [*manifest.shards, *([manifest.cross] if manifest.cross else [])]:
            verify_shard(path, entry)
    copies = [] if first.cross is None else [(first.cross, workers[0][0])]
    for j in range(n_shards):
        index = j % len(workers)
        manifest = manifests[index]
        copies.append((manifest.shards[j // len(workers)], workers[index][0]))
        merged.shards.append(manifest.shards[j // len(workers)])
        for rid, row in manifest.records.items():
            if row.shard != j:
                continue
            if rid in merged.records:
                raise ShardError(f"record {rid!r} is in two worker outputs; rerun the workers")
            merged.records[rid] = row
    for entry, source in copies:
        atomic_write_bytes(root / entry.file, (source / entry.file).read_bytes())
        verify_shard(root, entry)
    merged.write(root, MANIFEST)
    for path, _body in workers.values():
        shutil.rmtree(path)
    return merged
