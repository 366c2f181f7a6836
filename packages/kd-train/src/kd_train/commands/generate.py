"""``kd-train generate``: answer a prompts file with an HTTP teacher, resumably, on a budget.

Exit status: 0 when every prompt is written; 3 when the run stopped at the budget cap
(raise it with ``--budget X --change-budget`` and rerun) or the budget is halted; 1 when
some requests failed for good (rerun to retry them); 2 for an input error (a budget
without prices, another cap than the shared budget's without ``--change-budget``, a
credential in ``--base-url``, an output made by another teacher).

With ``--shard I/N`` (or under ``torchrun``) the run is worker ``I`` of ``N``: it answers
the prompts ``i`` with ``i % N == I`` into ``OUT.worker-I-of-N.jsonl``, with its own ledger
owner; ``kd-train merge-shards --dataset OUT --prompts P`` joins the workers' outputs
(:mod:`kd_train.shards`).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import TYPE_CHECKING, Any

from kd_train.cliutil import output_file_problem
from kd_train.errors import KDTrainError

if TYPE_CHECKING:
    from kd_train.generate.config import GenerateConfig
    from kd_train.generate.output import Prompt
    from kd_train.generate.run import GenerateSummary
    from kd_train.shards import WorkerShard

#: Exit status when the run stopped because the next request would exceed the budget.
EXIT_BUDGET = 3

# flag name -> (config key, type, help)
_FLAGS: dict[str, tuple[str, Any, str]] = {
    "--prompts": ("prompts", str, "JSONL of {id, prompt} rows"),
    "--out": ("out", str, "output JSONL of KD records (appended; resumable)"),
    "--base-url": ("base_url", str, "API root, e.g. http://127.0.0.1:8000/v1"),
    "--model": ("model", str, "model name sent to the endpoint"),
    "--api": ("api", str, "completions (default) or chat"),
    "--api-key-env": ("api_key_env", str, "NAME of the environment variable with the API key"),
    "--max-tokens": ("max_tokens", int, "completion length limit"),
    "--top-logprobs": ("top_logprobs", int, "alternatives per token (K)"),
    "--temperature": ("temperature", float, "sampling temperature"),
    "--timeout": ("timeout", float, "seconds per attempt"),
    "--budget": ("budget", float, "spend cap in USD"),
    "--budget-name": ("budget_name", str, "ledger budget shared by workers"),
    "--price-per-1k-prompt": ("price_per_1k_prompt", float, "USD per 1000 prompt tokens"),
    "--price-per-1k-completion": ("price_per_1k_completion", float, "USD per 1000 output tokens"),
    "--concurrency": ("concurrency", int, "requests in flight at most"),
    "--rpm": ("rpm", float, "requests per minute at most"),
    "--store": ("store", str, "store URL (sqlite:///..., postgresql://...)"),
    "--tokenizer": ("tokenizer", str, "teacher tokenizer dir or .gguf: store top-k as ids"),
}
_RETRY_FLAGS: dict[str, tuple[str, Any, str]] = {
    "--max-attempts": ("max_attempts", int, "attempts per request, the first included"),
    "--retry-base-delay": ("base_delay", float, "first backoff ceiling in seconds"),
}


def register(subparsers: Any) -> None:
    """Add the ``generate`` subcommand."""
    parser = subparsers.add_parser(
        "generate", help="answer prompts with an HTTP teacher (resumable, budgeted)"
    )
    parser.add_argument("--config", help="YAML or TOML file with the keys below")
    for flag, (key, kind, text) in _FLAGS.items():
        parser.add_argument(flag, dest=key, type=kind, default=None, help=text)
    for flag, (key, kind, text) in _RETRY_FLAGS.items():
        parser.add_argument(flag, dest=f"retry_{key}", type=kind, default=None, help=text)
    parser.add_argument(
        "--change-budget",
        action="store_true",
        default=None,
        help="set the cap of an existing (shared) budget to --budget; recorded and logged",
    )
    parser.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="be worker I (0-based) of N: answer every N-th prompt into OUT.worker-I-of-N.jsonl "
        "(default under torchrun: RANK/WORLD_SIZE); join them with kd-train merge-shards",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``generate`` with the parsed arguments; print the summary; return the exit code."""
    from kd_train.generate.output import read_prompts
    from kd_train.generate.run import generate_dataset
    from kd_train.shards import shard_from
    from kd_train.store import open_store
    from kd_train.teachers.http import HTTPTeacher

    config = _config(args)
    worker = shard_from(args.shard, os.environ)
    api_key = _api_key(config)
    tokenizer = _tokenizer(config)
    prompts = read_prompts(config.prompts)
    owner = f"{socket.gethostname()}:{os.getpid()}"
    if worker is not None:
        config, prompts = _worker_share(config, prompts, worker)
        owner = f"{owner}:{worker.name}"  # one ledger owner per worker, on any host
    _check_output(config, tokenizer)
    if worker is not None:
        _write_worker_record(config, worker)
    store = open_store(config.store_url)
    _open_budget(store, config, owner)
    run_id = store.runs.start("generate", config.public())
    status = "failed"
    try:
        with HTTPTeacher(
            config.teacher, api_key=api_key, store=store, tokenizer=tokenizer, owner=owner
        ) as teacher:
            summary = generate_dataset(
                prompts, teacher, config.out, tokenizer=tokenizer, progress=not args.no_progress
            )
        status = "budget" if summary.budget_stop else ("done" if summary.complete else "partial")
        _print_summary(summary, config, store.ledger.status(config.teacher.budget_name))
    finally:
        store.runs.finish(run_id, status)
        store.close()
    if summary.budget_stop:
        print(f"kd-train generate: stopped: {summary.budget_stop}", file=sys.stderr)
        return EXIT_BUDGET
    if summary.failed:
        print(
            f"kd-train generate: {summary.failed} prompts failed after retries; rerun the same "
            "command to retry them (answers already paid for are cached)",
            file=sys.stderr,
        )
        return 1
    return 0


def _worker_share(
    config: GenerateConfig, prompts: list[Prompt], worker: WorkerShard
) -> tuple[GenerateConfig, list[Prompt]]:
    """The worker's output (``OUT.worker-I-of-N.jsonl``) and its prompts (``i % N == I``).

    The output stays in ``OUT``'s directory, so the default store (``kd-store.sqlite``
    there) is shared by local workers, as remote ones share a PostgreSQL store.
    """
    from kd_train.shards import worker_output

    update = {"out": worker_output(config.out, worker)}
    share = [p for i, p in enumerate(prompts) if worker.owns(i)]
    return config.model_copy(update=update), share


def _write_worker_record(config: GenerateConfig, worker: WorkerShard) -> None:
    from kd_train.shards import worker_record_path, write_worker_file
    from kd_train.teachers.fingerprint import file_sha256

    write_worker_file(
        worker_record_path(config.out),
        worker,
        prompts_sha256=file_sha256(config.prompts),
    )


def _check_output(config: GenerateConfig, tokenizer: Any) -> None:
    """Refuse an existing output that this run would not append to, before writing anything.

    The output must hold only KD record lines (:func:`~kd_train.generate.output.written_ids`)
    made by the same teacher settings (:func:`~kd_train.generate.manifest.check_teacher`),
    and both are read-only checks here: the store, the manifest and the output are
    touched only once they pass.
    """
    from kd_train.generate.manifest import TeacherSettings, check_teacher
    from kd_train.generate.output import written_ids
    from kd_train.teachers.fingerprint import tokenizer_fingerprint

    problem = output_file_problem(config.out)
    if problem is not None:
        raise KDTrainError(f"out: {problem}")
    ids, _ = written_ids(config.out)
    if ids:  # with records, check_teacher only reads and compares
        fingerprint = tokenizer_fingerprint(tokenizer) if tokenizer is not None else None
        check_teacher(config.out, TeacherSettings.of(config.teacher, fingerprint), has_records=True)


def _config(args: argparse.Namespace) -> GenerateConfig:
    from kd_train.generate.config import generate_config, load_config_file

    data: dict[str, Any] = load_config_file(args.config) if args.config else {}
    for key, _kind, _text in _FLAGS.values():
        value = getattr(args, key)
        if value is not None:
            data[key] = value
    if args.change_budget:
        data["change_budget"] = True
    for key, _kind, _text in _RETRY_FLAGS.values():
        value = getattr(args, f"retry_{key}")
        if value is not None:
            data["retry"] = {**(data.get("retry") or {}), key: value}
    return generate_config(data, args.config or "command line")


def _open_budget(store: Any, config: GenerateConfig, owner: str) -> None:
    """Create or join the budget; a cap change (``--change-budget``) is shown on stderr."""
    from kd_train.store import usd_to_nanos

    teacher = config.teacher
    cap = None if teacher.budget is None else usd_to_nanos(teacher.budget)
    try:
        changed = store.ledger.open_budget(
            teacher.budget_name, cap, change=teacher.change_budget, actor=owner
        )
    except KDTrainError:
        store.close()
        raise
    if changed is not None:
        print(
            f"kd-train generate: budget {teacher.budget_name!r}: {changed} "
            "(--change-budget; recorded in the store's budget_events)",
            file=sys.stderr,
        )


def _api_key(config: GenerateConfig) -> str | None:
    # The edge reads the environment; the core receives the key as an argument.
    if config.api_key_env is None:
        return None
    key = os.environ.get(config.api_key_env)
    if not key:
        raise KDTrainError(
            f"environment variable {config.api_key_env} (named by api_key_env) is not set; "
            "export it with the API key"
        )
    return key


def _tokenizer(config: GenerateConfig) -> Any | None:
    if config.tokenizer is None:
        return None
    from kd_train.teachers.tokens import load_tokenizer

    try:
        return load_tokenizer(config.tokenizer)
    except (OSError, ValueError) as exc:
        raise KDTrainError(f"cannot load the tokenizer from {config.tokenizer}: {exc}") from None


def _print_summary(summary: GenerateSummary, config: GenerateConfig, budget: Any) -> None:
    from kd_train.store import nanos_to_usd, redact_url
    from kd_train.teachers.http import UNLIMITED_NANOS

    cap = (
        "none" if budget.cap_nanos >= UNLIMITED_NANOS else f"${nanos_to_usd(budget.cap_nanos):.6f}"
    )
    rows = [
        ("prompts", summary.prompts),
        ("already written", summary.already_written),
        ("written now", summary.written),
        ("cache hits", summary.cache_hits),
        ("paid requests", summary.paid),
        ("failed", summary.failed),
        ("top-k unmapped", summary.topk_unmapped),
        ("chosen not top", summary.chosen_not_top),
        ("quarantined", summary.quarantined + summary.already_quarantined),
        ("spend this run", f"${summary.spent_usd:.6f}"),
        ("ledger spend", f"${nanos_to_usd(budget.spent_nanos):.6f}"),
        ("unconfirmed", f"${nanos_to_usd(budget.unconfirmed_nanos):.6f}"),
        ("held in flight", f"${nanos_to_usd(budget.reserved_nanos):.6f}"),
        ("budget", cap),
        ("store", redact_url(config.store_url)),
        ("output", str(config.out)),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
