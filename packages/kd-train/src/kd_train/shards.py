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
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kd_train.atomic import atomic_write_bytes, atomic_write_text
from kd_train.errors import KDTrainError

if TYPE_CHECKING:
    from kd_train.teachers import cache_format

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
        """This worker's output name, ``worker-I-of-N``."""
        return f"worker-{self.index}-of-{self.count}"

    def owns(self, item: int) -> bool:
        """Whether item ``item`` (a cache shard, a prompt) is this worker's."""
        return item % self.count == self.index


def shard_from(flag: str | None, env: Mapping[str, str]) -> WorkerShard | None:
    """The worker shard from ``--shard`` and/or ``torchrun``'s ``RANK``/``WORLD_SIZE``.

    ``env`` is the process environment, passed in by the command line layer. A run under
    ``torchrun`` with ``WORLD_SIZE`` 1 and no flag is a single run (``None``).

    >>> from kd_train.shards import shard_from
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


def _workers(
    found: dict[Path, Path], expected: Callable[[WorkerShard], Path]
) -> dict[int, tuple[Path, dict[str, object]]]:
    """Check the worker outputs ``found`` (output -> worker record) form one full set 0..N-1.

    ``expected`` names the output of a worker (for the messages).
    """
    if not found:
        raise ShardError(f"no worker outputs to merge, e.g. {expected(WorkerShard(0, 2))}")
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
        names = ", ".join(str(expected(WorkerShard(i, count))) for i in missing)
        raise ShardError(f"worker output {names} is missing; run that worker first")
    return by_index


def _require_equal(key: str, values: dict[Path, object]) -> None:
    distinct = {json.dumps(v, sort_keys=True) for v in values.values()}
    if len(distinct) > 1:
        listed = "; ".join(f"{path}: {value!r}" for path, value in values.items())
        raise ShardError(
            f"the workers were run on different inputs or settings ({key} differs: {listed}); "
            "rerun them all with the same arguments"
        )


def merge_cache(out: str | Path) -> cache_format.Manifest:
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
    workers = _workers(dirs, lambda shard: root / shard.name)
    manifests: dict[int, cache_format.Manifest] = {}
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


def worker_output(out: Path, shard: WorkerShard) -> Path:
    """A generate worker's output next to ``out``: ``out.jsonl`` -> ``out.worker-I-of-N.jsonl``.

    >>> from pathlib import Path
    >>> from kd_train.shards import WorkerShard, worker_output
    >>> worker_output(Path("run/out.jsonl"), WorkerShard(0, 2)).as_posix()
    'run/out.worker-0-of-2.jsonl'
    """
    return out.with_name(f"{out.stem}.{shard.name}{out.suffix}")


def worker_record_path(output: Path) -> Path:
    """The worker record beside a generate worker's ``output``: ``<output>.worker.json``."""
    return output.with_name(output.name + ".worker.json")


def _complete_lines(path: Path) -> dict[str, bytes]:
    """``id -> line`` of a JSONL output; :class:`ShardError` for a partial last line."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        raise ShardError(f"{path} ends in a partial line (a killed worker); rerun that worker")
    lines: dict[str, bytes] = {}
    for number, line in enumerate(data.splitlines(keepends=True), 1):
        try:
            rid = str(json.loads(line)["id"])
        except (ValueError, KeyError, TypeError):
            raise ShardError(f"{path}:{number}: not a JSON object with an id") from None
        if rid in lines:
            raise ShardError(f"{path}:{number}: id {rid!r} written twice")
        lines[rid] = line
    return lines


def merge_dataset(out: str | Path, prompts: str | Path) -> int:
    """Merge the generate workers' outputs next to ``out`` into ``out``; return its records.

    Records (and quarantined answers) are written in the prompts' order, which is the
    order of a single run with ``concurrency`` 1, so the files (``out``, its
    ``.teacher.json`` and ``.quarantine.jsonl``) are byte-identical to that run's. ``out``
    is written last, then the worker files are removed; running it again after a kill
    finishes the job.

    Raises:
        ShardError: a worker output is missing, duplicated or unfinished, or was made from
            other prompts or another teacher (named in the message); ``out`` exists with
            other content.
    """
    from kd_train.generate.manifest import manifest_path
    from kd_train.generate.output import read_prompts
    from kd_train.generate.run import quarantine_path
    from kd_train.teachers.fingerprint import file_sha256

    target = Path(out)
    pattern = re.compile(re.escape(target.stem) + r"\.worker-\d+-of-\d+" + re.escape(target.suffix))
    found = {
        p: worker_record_path(p)
        for p in target.parent.glob(f"{target.stem}.worker-*")
        if pattern.fullmatch(p.name)
    }
    if not found and target.is_file():  # merged already
        return len(_complete_lines(target))
    workers = _workers(found, lambda shard: worker_output(target, shard))
    order = read_prompts(prompts)
    digest = file_sha256(Path(prompts))
    for path, body in workers.values():
        if body.get("prompts_sha256") != digest:
            raise ShardError(
                f"worker output {path} was made from other prompts than {prompts} "
                "(prompts_sha256 differs); merge with the prompts file the workers read"
            )
    _require_equal(
        "teacher manifest",
        {path: manifest_path(path).read_bytes().decode() for path, _ in workers.values()},
    )
    records: dict[str, bytes] = {}
    held: dict[str, bytes] = {}
    count = len(workers)
    for index, (path, _body) in sorted(workers.items()):
        mine = _complete_lines(path)
        aside = _complete_lines(quarantine_path(path))
        share = {p.id for i, p in enumerate(order) if i % count == index}
        if not set(mine) | set(aside) <= share:
            raise ShardError(f"worker output {path} holds ids outside its share of {prompts}")
        missing = len(share - set(mine) - set(aside))
        if missing:
            raise ShardError(
                f"worker output {path} is unfinished ({missing} of {len(share)} prompts not "
                f"answered); rerun kd-train generate --shard {index}/{count} with the same "
                "arguments"
            )
        records.update(mine)
        held.update((rid, line) for rid, line in aside.items() if rid not in mine)
    merged = b"".join(records[p.id] for p in order if p.id in records)
    if target.exists() and target.read_bytes() != merged:
        raise ShardError(f"{target} exists with other content; merge into another --dataset")
    first = workers[0][0]
    atomic_write_bytes(manifest_path(target), manifest_path(first).read_bytes())
    if held:
        aside_lines = b"".join(held[p.id] for p in order if p.id in held)
        atomic_write_bytes(quarantine_path(target), aside_lines)
    atomic_write_bytes(target, merged)
    for path, _body in workers.values():
        for leftover in (
            path,
            manifest_path(path),
            quarantine_path(path),
            worker_record_path(path),
        ):
            leftover.unlink(missing_ok=True)
    return len(records)
