"""Measure a student as its teacher's speculative drafter on a held-out set of prompts.

Each record's prompt (``[bos] + prompt tokens``, the trainer's layout) is generated greedily
twice, up to ``max_new_tokens``: by the teacher alone and by the teacher with the student
drafting ``K`` tokens per round (:mod:`kd_eval.drafter.counting` says how each count is
taken). Both runs are greedy, so their outputs must be the same token ids; the result says
for how many prompts they were. Aggregated over the ``n`` prompts, each with a
percentile-bootstrap interval over prompts (:func:`kd_eval.stats.bootstrap.bootstrap_mean`,
as ratios of totals through its weights):

* acceptance rate ``α = Σ A_i / Σ P_i`` (accepted over proposed draft tokens);
* tokens per teacher forward ``τ = Σ N_i / Σ F_i`` (1 for the teacher alone);
* wall-clock speedup ``S = Σ t_teacher,i / Σ t_assisted,i`` (above 1: drafting pays), each
  time the fastest of ``repeats`` runs.

The acceptance rate depends on the student and teacher only (the fraction of the teacher's
greedy choices the student predicts, counted along drafts); the speedup also depends on the
hardware and on how much cheaper the student's forward is than the teacher's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kd_train.cliutil import progress_bar
from kd_train.data.schema import KDRecord

from kd_eval.drafter.counting import AssistedGeneration, Generation, assisted, teacher_alone
from kd_eval.errors import EvalDataError
from kd_eval.loading.models import LoadedModel, check_same_vocabulary
from kd_eval.stats.bootstrap import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    Estimate,
    bootstrap_mean,
)

#: The aggregated figures, in report order.
FIGURES = ("acceptance_rate", "tokens_per_teacher_forward", "speedup")

#: How each count is taken (copied into the result, so a reader of the JSON knows).
METHOD = (
    "teacher forwards counted by a forward hook on the teacher; every draft recorded from "
    "the student's generate (one call per round); accepted = each draft's leading tokens "
    "equal to the final output at the same positions; speedup = total teacher-alone seconds "
    "/ total assisted seconds, each the fastest of `repeats` runs, after one untimed "
    "warm-up of each on the first prompt"
)


@dataclass
class DrafterResult:
    """Per-prompt rows and aggregated estimates of a drafter run."""

    teacher: str
    student: str
    settings: dict[str, int]
    examples: list[dict[str, Any]]
    aggregate: dict[str, Estimate]
    parameters: dict[str, int] = field(default_factory=dict)

    @property
    def n_identical(self) -> int:
        """Prompts whose assisted output equals the teacher's own (all of them, for greedy)."""
        return sum(1 for row in self.examples if row["identical"])

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (the ``drafter`` section of a report)."""
        rows = self.examples
        return {
            "teacher": self.teacher,
            "student": self.student,
            "parameters": self.parameters,
            "settings": self.settings,
            "method": METHOD,
            "n_examples": len(rows),
            "n_identical": self.n_identical,
            "totals": {
                name: sum(row[name] for row in rows)
                for name in (
                    "new_tokens",
                    "teacher_forwards",
                    "proposed",
                    "accepted",
                    "teacher_seconds",
                    "assisted_seconds",
                )
            },
            "aggregate": {name: est.to_dict() for name, est in self.aggregate.items()},
            "examples": rows,
        }


def prompt_ids(tokenizer: Any, record: KDRecord) -> list[int]:
    """Return ``[bos] + prompt tokens`` (no ``bos`` if the tokenizer has none).

    Raises:
        EvalDataError: the prompt has no tokens and there is no BOS token to start from.
    """
    bos = [] if tokenizer.bos_token_id is None else [int(tokenizer.bos_token_id)]
    ids = bos + list(tokenizer(record.prompt, add_special_tokens=False)["input_ids"])
    if not ids:
        raise EvalDataError(
            f"record {record.id!r}: the prompt is empty and the tokenizer has no BOS token, "
            "so there is nothing to generate from; give the record a prompt"
        )
    return ids


def evaluate_drafter(
    teacher: LoadedModel,
    student: LoadedModel,
    records: Sequence[KDRecord],
    *,
    max_new_tokens: int = 32,
    draft_tokens: int = 5,
    repeats: int = 1,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
    progress: bool = False,
) -> DrafterResult:
    """Generate every prompt with the teacher alone and with ``student`` drafting; aggregate.

    Args:
        teacher: the target model.
        student: the drafter; it must share the teacher's tokenizer.
        records: the held-out records (their prompts are used).
        max_new_tokens: the length limit of every generation (at least 2: with one new
            token there is nothing to draft).
        draft_tokens: ``K``, the tokens the student drafts per round (at least 1).
        repeats: runs of each generation per prompt; the fastest is kept (the counts are
            the same every run), which takes most of a busy machine's noise out.
        resamples: bootstrap resamples.
        seed: bootstrap seed.
        confidence: the intervals' coverage.
        progress: show a progress bar over prompts on stderr.

    Raises:
        VocabularyMismatchError: teacher and student vocabularies differ.
        EvalDataError: ``records`` is empty, a prompt has no tokens, or the settings are
            out of range.
    """
    check_same_vocabulary(teacher, student)
    if not records:
        raise EvalDataError("the eval set is empty; the drafter needs at least one prompt")
    if max_new_tokens < 2 or draft_tokens < 1 or repeats < 1:
        raise EvalDataError(
            f"max_new_tokens {max_new_tokens}, draft_tokens {draft_tokens}, repeats {repeats}: "
            "the drafter needs max_new_tokens >= 2 (one new token leaves no draft), "
            "draft_tokens >= 1 and repeats >= 1"
        )
    tokenizer = teacher.tokenizer
    prompts = [prompt_ids(tokenizer, record) for record in records]
    pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)

    def measure(ids: list[int]) -> tuple[Generation, AssistedGeneration]:
        alone = teacher_alone(teacher.model, ids, max_new_tokens, pad)
        drafted = assisted(
            teacher.model, student.model, ids, max_new_tokens, pad, draft_tokens=draft_tokens
        )
        return alone, drafted

    measure(prompts[0])  # warm-up, untimed: the first call of each path pays one-off costs
    rows: list[dict[str, Any]] = []
    pairs = list(zip(records, prompts, strict=True))
    for record, ids in progress_bar(pairs, desc="drafter", unit="prompt", enabled=progress):
        alone, drafted = measure(ids)
        alone_s, drafted_s = alone.seconds, drafted.seconds
        for _ in range(repeats - 1):
            again = measure(ids)
            alone_s, drafted_s = min(alone_s, again[0].seconds), min(drafted_s, again[1].seconds)
        rows.append(
            {
                "id": record.id,
                "prompt_tokens": len(ids),
                "new_tokens": len(drafted.new_ids),
                "teacher_forwards": drafted.teacher_forwards,
                "teacher_alone_forwards": alone.teacher_forwards,
                "proposed": drafted.proposed,
                "accepted": drafted.accepted,
                "teacher_seconds": alone_s,
                "assisted_seconds": drafted_s,
                "identical": drafted.new_ids == alone.new_ids,
            }
        )
    return DrafterResult(
        teacher=str(teacher.path),
        student=str(student.path),
        settings={
            "max_new_tokens": max_new_tokens,
            "draft_tokens": draft_tokens,
            "repeats": repeats,
        },
        examples=rows,
        aggregate=aggregate(rows, resamples=resamples, seed=seed, confidence=confidence),
        parameters={"teacher": teacher.parameters, "student": student.parameters},
    )


def aggregate(
    rows: Sequence[dict[str, Any]],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict[str, Estimate]:
    """Return the three ratios of totals with bootstrap intervals over the ``rows``.

    A ratio of totals ``Σ a_i / Σ b_i`` is the weighted mean of ``a_i / b_i`` with weights
    ``b_i``, so :func:`~kd_eval.stats.bootstrap.bootstrap_mean` resamples it by prompt.

    Raises:
        EvalDataError: no draft token was proposed at all (the rate would be 0 / 0).

    >>> from kd_eval.drafter.run import aggregate
    >>> rows = [
    ...     {"accepted": 3, "proposed": 4, "new_tokens": 8, "teacher_forwards": 4,
    ...      "teacher_seconds": 2.0, "assisted_seconds": 1.0},
    ...     {"accepted": 1, "proposed": 4, "new_tokens": 4, "teacher_forwards": 4,
    ...      "teacher_seconds": 1.0, "assisted_seconds": 2.0},
    ... ]
    >>> {k: e.value for k, e in aggregate(rows, resamples=50).items()}
    {'acceptance_rate': 0.5, 'tokens_per_teacher_forward': 1.5, 'speedup': 1.0}
    """
    opts: dict[str, Any] = {"resamples": resamples, "seed": seed, "confidence": confidence}
    if sum(row["proposed"] for row in rows) == 0:
        raise EvalDataError(
            "the student proposed no draft token on any prompt, so there is no acceptance "
            "rate; raise max_new_tokens"
        )
    pairs = {
        "acceptance_rate": ("accepted", "proposed"),
        "tokens_per_teacher_forward": ("new_tokens", "teacher_forwards"),
        "speedup": ("teacher_seconds", "assisted_seconds"),
    }
    out = {}
    for name, (num, den) in pairs.items():
        weights = [float(row[den]) for row in rows]
        values = [row[num] / w if w > 0 else 0.0 for row, w in zip(rows, weights, strict=True)]
        out[name] = bootstrap_mean(values, weights, **opts)
    return out
