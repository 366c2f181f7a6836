"""Generate a KD dataset from an HTTP teacher, resumably.

Every prompt is served from the output file (already written), the response cache (paid
for by an earlier run that was killed before writing it) or the endpoint (paid now), and
written exactly once, or set aside: an answer no record can be made of (an empty
completion) is quarantined in ``<out>.quarantine.jsonl`` with the reason
(:func:`unusable`), counted, and not asked again by a rerun. An output keeps to one
teacher: its settings are recorded next to it and an append with other settings is refused
(:mod:`kd_train.generate.manifest`). The loop
keeps at most ``2 × concurrency`` prompts in flight; a budget stop lets requests in flight
finish and be written, then returns.

>>> import tempfile, pathlib
>>> from kd_train.generate.run import GenerateSummary
>>> GenerateSummary(prompts=3, already_written=1, written=2).complete
True
"""

from __future__ import annotations

import json
import os
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kd_train.cliutil import progress_bar
from kd_train.data.schema import KDRecord, TeacherTopK
from kd_train.generate.manifest import TeacherSettings, check_teacher
from kd_train.generate.output import Prompt, RecordAppender, recover_output
from kd_train.store import BudgetExhaustedError, BudgetOverrunError, nanos_to_usd
from kd_train.teachers.fingerprint import tokenizer_fingerprint
from kd_train.teachers.http import HTTPTeacher, HTTPTeacherError, Response
from kd_train.teachers.openai_api import parse_generation
from kd_train.teachers.tokens import TokenMap, generation_topk


@dataclass
class GenerateSummary:
    """What a generation run did.

    Attributes:
        prompts: prompts in the input.
        already_written: prompts found in the output at start (from an earlier run).
        written: records written by this run.
        cache_hits: of those, answered from the response cache (free).
        paid: of those, answered by the endpoint (paid).
        spent_usd: the confirmed cost of this run's paid requests.
        unconfirmed_usd: the worst case charged for this run's requests that were sent but
            got no usable answer (the provider may have billed them); the budget counts it.
        failed: prompts whose requests failed for good (rerun to retry them).
        topk_unmapped: records written without ``teacher_topk`` because a position's
            returned tokens map to no single id (``metadata["teacher_topk_unmapped"]``).
        chosen_not_top: records where, at temperature 0, a chosen token is not the
            top-ranked one (``metadata["teacher_chosen_not_top"]``: the server sampled).
        quarantined: answers this run set aside in ``<out>.quarantine.jsonl`` (unusable).
        already_quarantined: prompts found quarantined at start (not asked again).
        budget_stop: the message of the budget stop, when the run stopped for the budget.
    """

    prompts: int
    already_written: int = 0
    written: int = 0
    cache_hits: int = 0
    paid: int = 0
    spent_usd: float = 0.0
    unconfirmed_usd: float = 0.0
    failed: int = 0
    topk_unmapped: int = 0
    chosen_not_top: int = 0
    quarantined: int = 0
    already_quarantined: int = 0
    budget_stop: str | None = None

    @property
    def complete(self) -> bool:
        """Whether every prompt is now in the output."""
        done = self.already_written + self.written + self.quarantined + self.already_quarantined
        return done == self.prompts


def generate_dataset(
    prompts: list[Prompt],
    teacher: HTTPTeacher,
    out: str | Path,
    *,
    tokenizer: Any | None = None,
    progress: bool = True,
) -> GenerateSummary:
    """Write one KD record per prompt to ``out`` (JSONL), resuming what is already there.

    Args:
        prompts: the prompts, unique ids.
        teacher: the endpoint, with its store (cache + ledger) and limits.
        out: the output JSONL; appended to, after truncating a partial last line, when its
            teacher manifest matches this teacher's settings.
        tokenizer: the teacher's tokenizer; when given, top log-probs are stored as token
            ids in ``teacher_topk``, else as token strings in ``metadata``.
        progress: show a progress bar on standard error.

    Raises:
        kd_train.errors.KDTrainError: ``out`` holds records of another teacher (see
            :func:`~kd_train.generate.manifest.check_teacher`).
    """
    done = recover_output(out)
    fingerprint = tokenizer_fingerprint(tokenizer) if tokenizer is not None else None
    check_teacher(out, TeacherSettings.of(teacher.config, fingerprint), has_records=bool(done))
    held = quarantined_ids(quarantine_path(out))
    todo = [p for p in prompts if p.id not in done and p.id not in held]
    summary = GenerateSummary(
        prompts=len(prompts),
        already_written=sum(p.id in done for p in prompts),
        already_quarantined=sum(p.id in held and p.id not in done for p in prompts),
    )
    vocab = TokenMap.of(tokenizer) if tokenizer is not None else None
    window = 2 * teacher.config.concurrency
    bar = progress_bar(
        total=len(prompts),
        initial=summary.already_written + summary.already_quarantined,
        enabled=progress,
        desc="generate",
    )
    unconfirmed_before = teacher.counters.unconfirmed_nanos
    pending: dict[Future[Response], Prompt] = {}
    queue = iter(todo)
    with RecordAppender(out) as appender, ThreadPoolExecutor(teacher.config.concurrency) as pool:
        while True:
            while summary.budget_stop is None and len(pending) < window:
                nxt = next(queue, None)
                if nxt is None:
                    break
                pending[pool.submit(teacher.generate, nxt.prompt)] = nxt
            if not pending:
                break
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                prompt = pending.pop(future)
                try:
                    response = future.result()
                except (BudgetExhaustedError, BudgetOverrunError) as exc:
                    summary.budget_stop = str(exc)
                    continue
                except HTTPTeacherError:
                    summary.failed += 1
                    continue
                summary.cache_hits += int(response.cached)
                summary.paid += int(not response.cached)
                summary.spent_usd += nanos_to_usd(response.cost_nanos)
                bar.update(1)
                reason = unusable(response, teacher)
                if reason is not None:
                    quarantine(quarantine_path(out), prompt, reason, response)
                    summary.quarantined += 1
                    continue
                record = to_record(prompt, response, teacher, vocab)
                appender.append(record)
                summary.written += 1
                summary.topk_unmapped += int("teacher_topk_unmapped" in record.metadata)
                summary.chosen_not_top += int("teacher_chosen_not_top" in record.metadata)
    bar.close()
    summary.unconfirmed_usd = nanos_to_usd(teacher.counters.unconfirmed_nanos - unconfirmed_before)
    return summary


def quarantine_path(out: str | Path) -> Path:
    """Where the answers of ``out`` that make no record are set aside."""
    return Path(f"{out}.quarantine.jsonl")


def unusable(response: Response, teacher: HTTPTeacher) -> str | None:
    """Why no record can be made of ``response``, or ``None``: an empty completion.

    An instruct model asked without its chat template often stops at once
    (``finish_reason: stop``, no text); such a record is refused by ``validate-data``.
    """
    gen = parse_generation(teacher.config.api, response.body)
    if gen.text.strip():
        return None
    choices = response.body.get("choices") or [{}]
    finish = choices[0].get("finish_reason") if isinstance(choices[0], dict) else None
    return (
        f"empty completion ({len(gen.tokens)} tokens, finish_reason {finish!r}); with an "
        "instruct model, try api 'chat' (its chat template)"
    )


def quarantine(path: Path, prompt: Prompt, reason: str, response: Response) -> None:
    """Append one quarantined answer to ``path`` (one JSON line, flushed to disk)."""
    row = {"id": prompt.id, "prompt": prompt.prompt, "code": "unusable_completion"}
    row.update(reason=reason, response_key=response.key)
    with path.open("ab") as handle:
        handle.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
        handle.flush()
        os.fsync(handle.fileno())


def quarantined_ids(path: Path) -> set[str]:
    """The prompt ids quarantined in ``path``; a partial last line (a kill) is cut off."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        path.write_bytes(data)
    return {json.loads(line)["id"] for line in data.splitlines() if line.strip()}


def to_record(
    prompt: Prompt, response: Response, teacher: HTTPTeacher, vocab: TokenMap | None
) -> KDRecord:
    """Build the KD record of ``prompt`` from the endpoint's ``response``.

    With ``vocab`` (the teacher tokenizer's :class:`~kd_train.teachers.tokens.TokenMap`),
    top log-probs become ``teacher_topk`` (``[n_tokens][k]`` ids and log-probs, ``k`` =
    ``top_logprobs``) and the chosen tokens ``metadata["teacher_chosen"]`` (ids); a record
    whose returned tokens cannot all be mapped, or whose chosen tokens do not join into the
    completion, keeps no ``teacher_topk``: ``metadata["teacher_topk_unmapped"]`` says why
    (:func:`~kd_train.teachers.tokens.generation_topk`). Without it they are kept as
    strings in ``metadata["teacher_top_logprobs"]``. At temperature 0, the positions whose
    chosen token is not the top-ranked one are listed in
    ``metadata["teacher_chosen_not_top"]``. What the teacher was conditioned on is recorded
    as ``metadata["teacher_prompt_tokens"]`` (the endpoint's count: with ``chat``, its
    template and any default system prompt included) and, for ``chat``,
    ``metadata["teacher_input"]``.
    """
    gen = parse_generation(teacher.config.api, response.body)
    metadata: dict[str, Any] = {"teacher_model": teacher.config.model}
    if gen.usage is not None:  # what the teacher was conditioned on (a chat template adds)
        metadata["teacher_prompt_tokens"] = gen.usage.prompt_tokens
    if teacher.config.api == "chat":
        metadata["teacher_input"] = (
            "chat: the prompt as one user message in the endpoint's template"
        )
    topk = None
    k = teacher.config.top_logprobs
    if teacher.config.temperature == 0.0 and gen.top:
        off = [
            i
            for i, (tok, top) in enumerate(zip(gen.tokens, gen.top, strict=False))
            if top and tok != top[0][0]
        ]
        if off:
            metadata["teacher_chosen_not_top"] = off
    if gen.top and k > 0:
        if vocab is not None:
            mapped = generation_topk(vocab, gen, k)
            if mapped.chosen is not None:
                metadata["teacher_chosen"] = mapped.chosen
            if mapped.problem is None:
                topk = TeacherTopK(mapped.ids, mapped.logprobs)
            else:
                metadata["teacher_topk_unmapped"] = mapped.problem
        else:
            tokens = [[tok for tok, _ in t[:k]] for t in gen.top]
            logprobs = [[min(0.0, lp) for _, lp in t[:k]] for t in gen.top]
            metadata["teacher_top_logprobs"] = {"tokens": tokens, "logprobs": logprobs}
            metadata["teacher_chosen_tokens"] = gen.tokens
    return KDRecord(
        id=prompt.id,
        prompt=prompt.prompt,
        completion=gen.text,
        teacher_topk=topk,
        metadata=metadata,
    )
