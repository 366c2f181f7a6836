"""Evaluate a student's fidelity to its teacher on a held-out set of KD records.

For each record, ``prompt + completion`` is tokenised (the prompt with the tokenizer's
special tokens, the completion without) and run through both models; the metrics of
:mod:`kd_eval.fidelity.metrics` are taken over the positions that predict the completion
tokens. Per example: the mean over its tokens (and its token count). Aggregated: the mean
over examples of KL, agreement and overlap, and ``exp`` of the token-weighted mean NLL for
perplexity, each with a percentile-bootstrap interval over examples
(:func:`kd_eval.stats.bootstrap.bootstrap_mean`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from kd_train.cliutil import progress_bar
from kd_train.data.schema import KDRecord

from kd_eval.errors import EvalDataError
from kd_eval.fidelity.metrics import token_metrics
from kd_eval.loading.models import LoadedModel, check_same_vocabulary
from kd_eval.stats.bootstrap import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    Estimate,
    bootstrap_mean,
)

#: The per-example metrics, in report order.
METRICS = ("forward_kl", "top1_agreement", "topk_overlap", "teacher_nll", "student_nll")


@dataclass
class FidelityResult:
    """Per-example rows and aggregated estimates of a fidelity run."""

    teacher: str
    student: str
    k: int
    examples: list[dict[str, Any]]
    aggregate: dict[str, Estimate]
    parameters: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (the ``fidelity`` section of a report)."""
        return {
            "teacher": self.teacher,
            "student": self.student,
            "k": self.k,
            "parameters": self.parameters,
            "n_examples": len(self.examples),
            "n_tokens": sum(int(e["n_tokens"]) for e in self.examples),
            "aggregate": {name: est.to_dict() for name, est in self.aggregate.items()},
            "examples": self.examples,
        }


def encode_example(tokenizer: Any, record: KDRecord) -> tuple[list[int], int]:
    """Return ``(ids, n_prompt)``: the token ids of prompt + completion and the prompt length.

    Raises:
        EvalDataError: the completion has no tokens, or nothing precedes it to predict from.
    """
    prompt_ids = list(tokenizer(record.prompt, add_special_tokens=True)["input_ids"])
    completion_ids = list(tokenizer(record.completion, add_special_tokens=False)["input_ids"])
    if not completion_ids:
        raise EvalDataError(f"record {record.id!r}: the completion is empty; nothing to score")
    if not prompt_ids:
        if tokenizer.bos_token_id is None:
            raise EvalDataError(
                f"record {record.id!r}: empty prompt and no BOS token, so the first "
                "completion token cannot be predicted; give the record a prompt"
            )
        prompt_ids = [int(tokenizer.bos_token_id)]
    return prompt_ids + completion_ids, len(prompt_ids)


@torch.no_grad()
def completion_logits(model: Any, ids: list[int], n_prompt: int) -> torch.Tensor:
    """Return the logits ``[C, V]`` at the positions that predict the ``C`` completion tokens."""
    out = model(input_ids=torch.tensor([ids])).logits[0]
    return out[n_prompt - 1 : len(ids) - 1].float()


def evaluate_fidelity(
    teacher: LoadedModel,
    student: LoadedModel,
    records: Sequence[KDRecord],
    *,
    k: int = 5,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
    progress: bool = False,
) -> FidelityResult:
    """Score ``records`` with both models and aggregate the fidelity metrics.

    Raises:
        VocabularyMismatchError: teacher and student vocabularies differ (naming both sizes).
        EvalDataError: ``records`` is empty or a record has an empty completion.
    """
    check_same_vocabulary(teacher, student)
    if not records:
        raise EvalDataError("the eval set is empty; fidelity needs at least one record")
    rows: list[dict[str, Any]] = []
    for record in progress_bar(records, desc="fidelity", unit="ex", enabled=progress):
        ids, n_prompt = encode_example(student.tokenizer, record)
        targets = torch.tensor(ids[n_prompt:])
        m = token_metrics(
            completion_logits(teacher.model, ids, n_prompt),
            completion_logits(student.model, ids, n_prompt),
            targets,
            k=k,
        )
        row: dict[str, Any] = {"id": record.id, "n_tokens": len(targets)}
        for name in METRICS:
            row[name] = float(getattr(m, name).mean())
        row["teacher_perplexity"] = math.exp(row["teacher_nll"])
        row["student_perplexity"] = math.exp(row["student_nll"])
        rows.append(row)
    opts: dict[str, Any] = {"resamples": resamples, "seed": seed, "confidence": confidence}
    tokens = [r["n_tokens"] for r in rows]
    aggregate = {
        name: bootstrap_mean([r[name] for r in rows], **opts)
        for name in ("forward_kl", "top1_agreement", "topk_overlap")
    }
    for who in ("teacher", "student"):
        nll = bootstrap_mean([r[f"{who}_nll"] for r in rows], tokens, **opts)
        aggregate[f"{who}_perplexity"] = nll.map(math.exp)
    return FidelityResult(
        teacher=str(teacher.path),
        student=str(student.path),
        k=k,
        examples=rows,
        aggregate=aggregate,
        parameters={"teacher": teacher.parameters, "student": student.parameters},
    )
