"""Evaluate a student's fidelity to its teacher on a held-out set of KD records.

For each record, ``prompt + completion`` is tokenised (the prompt with the tokenizer's
special tokens, the completion without) and run through both models; the metrics of
:mod:`kd_eval.fidelity.metrics` are taken over the positions that predict the completion
tokens. Per example: the mean over its tokens (and its token count). Aggregated: the mean
over examples of KL, agreement and overlap, and ``exp`` of the token-weighted mean NLL for
perplexity, each with a percentile-bootstrap interval over examples
(:func:`kd_eval.stats.bootstrap.bootstrap_mean`).

Tokenizer-independent figures (:mod:`kd_eval.fidelity.text_level`) come with every run:
bits per byte of the completion for both models (byte-weighted over examples) and the
text-level top-1 agreement (span-weighted). A teacher and a student with **different
tokenizers** get only these: each model reads the record through its own tokenizer, and
the per-token figures (KL, agreement, overlap, perplexity) are left out, since their tokens
differ. With one tokenizer the per-token figures are as they always were.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from kd_train.cliutil import progress_bar
from kd_train.data.schema import KDRecord
from kd_train.data.tokenization import tokenize_completion
from kd_train.data.vocab_map import build_vocab_map

from kd_eval.errors import EvalDataError, VocabularyMismatchError
from kd_eval.fidelity.metrics import token_metrics
from kd_eval.fidelity.text_level import bits_per_byte, text_top1
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
    tokenizers: str = "same"

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (the ``fidelity`` section of a report)."""
        return {
            "teacher": self.teacher,
            "student": self.student,
            "k": self.k,
            "tokenizers": self.tokenizers,
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

    With different tokenizers only the tokenizer-independent figures are computed (see the
    module docstring).

    Raises:
        EvalDataError: ``records`` is empty or a record has an empty completion.
    """
    try:
        check_same_vocabulary(teacher, student)
        same = True
    except VocabularyMismatchError:
        same = False
    if not records:
        raise EvalDataError("the eval set is empty; fidelity needs at least one record")
    if same:
        pairs = {i: i for i in range(student.vocab_size)}
    else:
        vocab_map = build_vocab_map(student.tokenizer, teacher.tokenizer)
        pairs = dict(zip(vocab_map.teacher.tolist(), vocab_map.student.tolist(), strict=True))
    rows: list[dict[str, Any]] = []
    for record in progress_bar(records, desc="fidelity", unit="ex", enabled=progress):
        ids, n_prompt = encode_example(student.tokenizer, record)
        targets = torch.tensor(ids[n_prompt:])
        s_logits = completion_logits(student.model, ids, n_prompt)
        s_offsets = tokenize_completion(record.completion, student.tokenizer)[1]
        row: dict[str, Any] = {"id": record.id, "n_tokens": len(targets)}
        if same:
            t_logits, t_targets, t_offsets = (
                completion_logits(teacher.model, ids, n_prompt),
                targets,
                s_offsets,
            )
            m = token_metrics(t_logits, s_logits, targets, k=k)
            for name in METRICS:
                row[name] = float(getattr(m, name).mean())
            row["teacher_perplexity"] = math.exp(row["teacher_nll"])
            row["student_perplexity"] = math.exp(row["student_nll"])
        else:
            t_ids, t_prompt = encode_example(teacher.tokenizer, record)
            t_targets = torch.tensor(t_ids[t_prompt:])
            t_logits = completion_logits(teacher.model, t_ids, t_prompt)
            t_offsets = tokenize_completion(record.completion, teacher.tokenizer)[1]
            row["teacher_n_tokens"] = len(t_targets)
        n_bytes = len(record.completion.encode("utf-8"))
        row["n_bytes"] = n_bytes
        row["teacher_bits_per_byte"] = bits_per_byte(t_logits, t_targets, n_bytes)
        row["student_bits_per_byte"] = bits_per_byte(s_logits, targets, n_bytes)
        agree, spans = text_top1(t_logits, t_offsets, s_logits, s_offsets, pairs)
        row["text_spans"] = spans
        row["text_top1_agreement"] = agree / spans if spans else None
        rows.append(row)
    opts: dict[str, Any] = {"resamples": resamples, "seed": seed, "confidence": confidence}
    aggregate: dict[str, Estimate] = {}
    if same:
        tokens = [r["n_tokens"] for r in rows]
        aggregate = {
            name: bootstrap_mean([r[name] for r in rows], **opts)
            for name in ("forward_kl", "top1_agreement", "topk_overlap")
        }
        for who in ("teacher", "student"):
            nll = bootstrap_mean([r[f"{who}_nll"] for r in rows], tokens, **opts)
            aggregate[f"{who}_perplexity"] = nll.map(math.exp)
    byte_counts = [r["n_bytes"] for r in rows]
    for who in ("teacher", "student"):
        name = f"{who}_bits_per_byte"
        aggregate[name] = bootstrap_mean([r[name] for r in rows], byte_counts, **opts)
    spanned = [r for r in rows if r["text_spans"]]
    if spanned:
        aggregate["text_top1_agreement"] = bootstrap_mean(
            [r["text_top1_agreement"] for r in spanned], [r["text_spans"] for r in spanned], **opts
        )
    return FidelityResult(
        teacher=str(teacher.path),
        student=str(student.path),
        k=k,
        examples=rows,
        aggregate=aggregate,
        parameters={"teacher": teacher.parameters, "student": student.parameters},
        tokenizers="same" if same else "different",
    )
