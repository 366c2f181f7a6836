"""Pieces shared by the demo pipelines: run a training stage, measure KL and accuracy.

Every stage is a real ``kd-train`` run (:func:`kd_train.trainer.loop.train` on a config dict,
the same code ``kd-train distill`` runs), so the pipelines exercise the product end to end.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from kd_train.atomic import atomic_write_text
from kd_train.data.holdout import refuse_overlap
from kd_train.data.schema import KDRecord
from kd_train.data.tokenization import TokenizeConfig, encode_record
from kd_train.models import DEFAULT_CORPUS, llama_config, save_random_llama, train_tokenizer
from kd_train.pipelines.toydata import corpus_of, write_jsonl
from kd_train.trainer import parse_config, train
from kd_train.trainer.metrics import read_metrics


@dataclass(frozen=True)
class Prepared:
    """What every toy pipeline starts from: its data split and its untrained models."""

    train_file: Path
    heldout: list[KDRecord]
    teacher_init: Path
    student_init: Path


def split_held_out(
    records: Sequence[KDRecord], n_train: int, tokenizer: Any
) -> tuple[list[KDRecord], list[KDRecord]]:
    """``records[:n_train]`` and the rest, refused when the rest repeats a training row.

    Rows are compared by the token sequence the trainer builds from them with
    ``tokenizer`` (:mod:`kd_train.data.holdout`), so a held-out figure is never measured
    on training data.

    Raises:
        kd_train.data.holdout.HeldOutOverlapError: naming the count and the first ids.
    """
    train_records, heldout = list(records[:n_train]), list(records[n_train:])
    config = TokenizeConfig(max_length=1 << 20)
    refuse_overlap(
        [encode_record(r, tokenizer, config) for r in train_records],
        [encode_record(r, tokenizer, config) for r in heldout],
        split="held-out",
    )
    return train_records, heldout


def prepare(root: Path, records: Sequence[KDRecord], n_train: int) -> Prepared:
    """Split ``records`` into ``data/train.jsonl`` + ``data/heldout.jsonl`` under ``root``.

    The tokenizer is trained on the records' text first, and the split is checked with it
    (:func:`split_held_out`); then an untrained teacher (hidden 64, 3 layers) and a smaller
    GQA student (hidden 32, 2 layers) are saved with that tokenizer.
    """
    tokenizer = train_tokenizer([*DEFAULT_CORPUS, *corpus_of(records)])
    train_records, heldout = split_held_out(records, n_train, tokenizer)
    train_file = write_jsonl(root / "data" / "train.jsonl", train_records)
    write_jsonl(root / "data" / "heldout.jsonl", heldout)
    teacher = llama_config(len(tokenizer), hidden_size=64, num_layers=3)
    teacher_init = save_random_llama(root / "teacher-init", teacher, tokenizer, seed=1)
    student = llama_config(len(tokenizer), hidden_size=32, num_layers=2)
    student_init = save_random_llama(root / "student-init", student, tokenizer, seed=0)
    return Prepared(train_file, heldout, teacher_init, student_init)


def run_stage(config: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """Train one stage from a run-config dict; return the first and last metrics rows.

    The config is also written next to the run as ``<output_dir>.yaml``-equivalent JSON
    (``config.json`` inside the run dir), so the stage can be rerun with ``kd-train distill``.
    """
    result = train(parse_config(config), progress=progress)
    rows = read_metrics(result.run_dir / "metrics.jsonl")
    return {"first": rows[0], "last": rows[-1], "student": str(result.student_dir)}


@torch.no_grad()
def mean_forward_kl(teacher_dir: Path, student_dir: Path, texts: Sequence[str]) -> float:
    """Mean per-token ``KL(teacher ‖ student)`` of two saved models over ``texts`` (nats)."""
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    student = AutoModelForCausalLM.from_pretrained(student_dir).eval()
    total, count = 0.0, 0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt")
        t = torch.log_softmax(teacher(**ids).logits.float(), dim=-1)
        s = torch.log_softmax(student(**ids).logits.float(), dim=-1)
        total += float((t.exp() * (t - s)).sum())
        count += int(ids["input_ids"].numel())
    return total / max(count, 1)


@torch.no_grad()
def completion_kl(teacher_dir: Path, student_dir: Path, records: Sequence[KDRecord]) -> float:
    """Mean ``KL(teacher ‖ student)`` (nats) over the positions that predict completion tokens.

    Records are laid out as the trainer lays them out, ``[bos] + prompt + completion +
    [eos]``; only the positions the distillation loss trains on are counted.
    """
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    student = AutoModelForCausalLM.from_pretrained(student_dir).eval()
    total, count = 0.0, 0
    for record in records:
        prompt = [
            tokenizer.bos_token_id,
            *tokenizer(record.prompt, add_special_tokens=False)["input_ids"],
        ]
        completion = [
            *tokenizer(record.completion, add_special_tokens=False)["input_ids"],
            tokenizer.eos_token_id,
        ]
        ids = torch.tensor([prompt + completion])
        rows = slice(len(prompt) - 1, ids.shape[1] - 1)
        t = torch.log_softmax(teacher(input_ids=ids).logits[0, rows].float(), dim=-1)
        s = torch.log_softmax(student(input_ids=ids).logits[0, rows].float(), dim=-1)
        total += float((t.exp() * (t - s)).sum())
        count += len(completion)
    return total / max(count, 1)


@torch.no_grad()
def label_accuracy(model_dir: Path, records: Sequence[KDRecord], labels: Sequence[str]) -> float:
    """Share of ``records`` whose completion is the most likely of ``labels`` after the prompt.

    ``score(y) = Σ_j log p(y_j | bos, prompt, y_<j)``; the label text is scored with the
    same leading space the completions carry.
    """
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    options = [f" {label}" for label in labels]
    label_ids = [tokenizer(o, add_special_tokens=False)["input_ids"] for o in options]
    correct = 0
    for record in records:
        prompt = [
            tokenizer.bos_token_id,
            *tokenizer(record.prompt, add_special_tokens=False)["input_ids"],
        ]
        width = len(prompt) + max(len(y) for y in label_ids)
        ids = torch.full((len(options), width), int(tokenizer.pad_token_id))
        mask = torch.zeros_like(ids)
        for row, y in enumerate(label_ids):
            ids[row, : len(prompt) + len(y)] = torch.tensor(prompt + y)
            mask[row, : len(prompt) + len(y)] = 1
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        per_label = [
            sum(float(logp[row, len(prompt) - 1 + j, tok]) for j, tok in enumerate(y))
            for row, y in enumerate(label_ids)
        ]
        best = max(range(len(options)), key=per_label.__getitem__)
        correct += int(options[best] == record.completion)
    return correct / max(len(records), 1)


def write_summary(path: Path, figures: dict[str, Any]) -> None:
    """Write the figures of a pipeline as JSON, atomically."""
    atomic_write_text(path, json.dumps(figures, indent=2, sort_keys=True))


def report(title: str, lines: list[tuple[str, str]]) -> None:
    """Print one pipeline's results as aligned ``name  value`` lines under a title."""
    print(f"== {title}")
    width = max(len(name) for name, _ in lines)
    for name, value in lines:
        print(f"  {name:<{width}}  {value}")
