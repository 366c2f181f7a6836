"""The distillation loop: setup, loop, checkpoint, save. Read it top to bottom.

One optimiser step::

    lr      = lr_at(step)                                  warmup, then cosine
    batches = the next grad_accum micro-batches           cursor (epoch, index) advances
    N       = label tokens in those batches, on all ranks  one normaliser for the step
    for each micro-batch:
        logits  = student(input_ids)                        bf16 autocast if asked
        teacher = teacher(input_ids)                        logits, top-k, or nothing
        terms   = loss(logits[:, :-1], labels[:, 1:], teacher, spans, N)
        backward(terms["loss"] * world_size)                DDP and FSDP average over ranks
    clip gradients; AdamW step
    log a metrics row; evaluate / stop early / checkpoint when due

Because every micro-batch loss is a sum over tokens divided by the same ``N``, the step's
gradient is the token mean over the whole global batch, whatever the split into
micro-batches and processes. With ``distributed.strategy: fsdp`` the student is sharded
across processes (see :mod:`kd_train.trainer.distributed`); the loop is the same, and
checkpoints and the final model hold the whole, gathered state.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kd_train.atomic import atomic_write_text
from kd_train.data import Batch, collate, next_token_view
from kd_train.errors import KDTrainError
from kd_train.teachers.base import TopK
from kd_train.trainer import distributed
from kd_train.trainer.batches import batches_per_epoch, epoch_order, micro_batch
from kd_train.trainer.checkpoint import (
    TrainState,
    gather_state,
    latest_checkpoint,
    load_checkpoint,
    write_checkpoint,
)
from kd_train.trainer.components import (
    IGNORE_INDEX,
    Example,
    TeacherFn,
    build_loss,
    load_examples,
    load_student,
    load_teacher,
    require_cache_covers,
)
from kd_train.trainer.config import OptimConfig, RunConfig
from kd_train.trainer.distributed import DistContext
from kd_train.trainer.metrics import MetricsLog, peak_memory_mb, postfix, progress_bar
from kd_train.trainer.outputs import save_student, write_run_manifest


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced: its directory, final state and last metrics row."""

    run_dir: Path
    student_dir: Path
    state: TrainState
    last_row: dict[str, Any]


def lr_at(step: int, optim: OptimConfig, max_steps: int) -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warmup, then cosine decay.

    ``lr·(step+1)/warmup`` during warmup, then
    ``min + (lr - min)·(1 + cos(π·progress))/2`` with ``min = min_lr_ratio·lr``.

    >>> from kd_train.trainer.config import OptimConfig
    >>> from kd_train.trainer.loop import lr_at
    >>> opt = OptimConfig(lr=1.0, warmup_steps=2, min_lr_ratio=0.0)
    >>> [round(lr_at(s, opt, 6), 3) for s in range(6)]
    [0.5, 1.0, 1.0, 0.854, 0.5, 0.146]
    """
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    decay_steps = max(max_steps - optim.warmup_steps, 1)
    progress = min((step - optim.warmup_steps) / decay_steps, 1.0)
    floor = optim.min_lr_ratio * optim.lr
    return floor + (optim.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def train(
    config: RunConfig,
    ctx: DistContext = DistContext(),  # noqa: B008 - frozen dataclass
    *,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Run (or, with ``resume``, continue) the distillation described by ``config``."""
    run_dir, tc = Path(config.output_dir), config.train
    device = ctx.device

    # ---- setup -------------------------------------------------------------------------
    distributed.init(ctx)
    if tc.threads is not None:
        torch.set_num_threads(tc.threads)
    seed_everything(tc.seed)
    student, tokenizer = load_student(config.student, tc.seed)
    student.to(device)
    teacher, eval_teacher = load_teacher(config.teacher, device, tokenizer, config.data)
    loss_fn = build_loss(config.loss, has_teacher=teacher is not None)
    train_set, eval_set = load_examples(config.data, tokenizer)
    require_cache_covers(teacher, train_set, "train", config.data.max_length)
    require_cache_covers(eval_teacher, eval_set, "eval", config.data.max_length)
    n_batches = batches_per_epoch(len(train_set), tc.batch_size, ctx.world_size)
    # DDP wraps the student; FSDP shards it in place, which is why the optimiser comes after.
    model = distributed.wrap(student, ctx, config.distributed.strategy)
    optimizer = torch.optim.AdamW(
        student.parameters(),
        lr=config.optim.lr,
        betas=config.optim.betas,
        eps=config.optim.eps,
        weight_decay=config.optim.weight_decay,
    )
    state = TrainState()
    if resume:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise KDTrainError(f"nothing to resume: {run_dir / 'checkpoints'} has no checkpoint")
        state = load_checkpoint(ckpt, student, optimizer)  # every rank reads it
    elif latest_checkpoint(run_dir) is not None:
        raise KDTrainError(
            f"output_dir {run_dir} already holds checkpoints; continue it with "
            f"'kd-train resume {run_dir}' or choose another output_dir"
        )
    elif ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", _json(config.to_dict()))
    distributed.barrier(ctx)
    pad_id = int(tokenizer.pad_token_id)
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=tc.precision == "bf16")

    def next_batch() -> Batch:
        """The next micro-batch of this rank; moves the cursor (epoch, index) on."""
        order = epoch_order(len(train_set), tc.seed, state.epoch)
        ids = micro_batch(order, state.index, tc.batch_size, ctx.rank, ctx.world_size)
        state.index += 1
        if state.index == n_batches:
            state.epoch, state.index = state.epoch + 1, 0
        return collate([train_set[i] for i in ids], pad_id)

    def loss_terms(batch: Batch, n_items: float, step: int) -> dict[str, torch.Tensor]:
        """Forward the student (and the teacher); return the loss terms of one micro-batch."""
        batch = batch.to(device)
        with autocast:
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        return compute_loss(loss_fn, teacher, logits, batch, n_items, step)

    # ---- loop --------------------------------------------------------------------------
    log = MetricsLog(run_dir / "metrics.jsonl", state.step if resume else None, ctx.is_main)
    bar = progress_bar(tc.max_steps, state.step, progress and ctx.is_main)
    row: dict[str, Any] = {}
    started = time.perf_counter()
    model.train()
    while state.step < tc.max_steps and not state.stopped_early:
        t0 = time.perf_counter()
        lr = lr_at(state.step, config.optim, tc.max_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batches = [next_batch() for _ in range(tc.grad_accum)]
        local_items = sum(count_targets(b) for b in batches)
        n_items = distributed.sum_across(float(local_items), ctx)
        step_terms: dict[str, float] = {}
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            with distributed.sync_grads(model, now=last):
                terms = loss_terms(batch, n_items, state.step)
                (terms["loss"] * ctx.world_size).backward()
            for name, value in terms.items():
                step_terms[name] = step_terms.get(name, 0.0) + float(value.detach())
        max_norm = tc.clip_norm if tc.clip_norm is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(student.parameters(), max_norm))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1

        local_tokens = sum(int(b.attention_mask.sum()) for b in batches)
        tokens = int(distributed.sum_across(float(local_tokens), ctx))
        state.tokens_seen += tokens
        seconds = time.perf_counter() - t0
        row = {
            "step": state.step,
            "epoch": state.epoch,
            **{name: distributed.sum_across(v, ctx) for name, v in sorted(step_terms.items())},
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens": tokens,
            "tokens_per_s": tokens / seconds,
            "elapsed_s": time.perf_counter() - started,
            "peak_memory_mb": peak_memory_mb(device),
        }
        if tc.eval_every and (state.step % tc.eval_every == 0 or state.step == tc.max_steps):
            eval_terms = evaluate(
                model, loss_fn, eval_teacher, eval_set, tc.batch_size, pad_id, device
            )
            row.update({f"eval_{k}": v for k, v in eval_terms.items()})
            update_early_stopping(state, eval_terms.get("loss"), tc.early_stopping_patience)
            model.train()
        log.write(row)
        bar.update(1)
        bar.set_postfix(postfix(row, sorted(step_terms)))
        if (tc.checkpoint_every and state.step % tc.checkpoint_every == 0) or (
            state.step == tc.max_steps or state.stopped_early
        ):
            full = gather_state(student, optimizer)  # every rank takes part; rank 0 gets it
            if ctx.is_main:
                write_checkpoint(run_dir, state, full, config.to_dict(), tc.keep_checkpoints)
            distributed.barrier(ctx)
    bar.close()
    log.close()

    # ---- save --------------------------------------------------------------------------
    student_dir = run_dir / "student"
    final = gather_state(student)  # the whole weights on rank 0, FSDP shards gathered
    digests = distributed.replica_digests(student, ctx)
    if ctx.is_main:
        save_student(student, tokenizer, student_dir, final.state_dict())
        write_run_manifest(run_dir, config, state, tokenizer, replica_sha256=digests)
    distributed.barrier(ctx)
    distributed.shutdown(ctx)
    return TrainResult(run_dir, student_dir, state, row)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    teacher: TeacherFn | None,
    examples: list[Example],
    batch_size: int,
    pad_id: int,
    device: torch.device,
) -> dict[str, float]:
    """Token-mean loss terms of ``model`` over ``examples`` (every rank computes all of it)."""
    if not examples:
        return {}
    model.eval()
    batches = [
        collate(examples[i : i + batch_size], pad_id) for i in range(0, len(examples), batch_size)
    ]
    n_items = sum(count_targets(b) for b in batches)
    totals: dict[str, float] = {}
    for batch in batches:
        batch = batch.to(device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        terms = compute_loss(loss_fn, teacher, logits, batch, n_items, step=None)
        for name, value in terms.items():
            totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def update_early_stopping(state: TrainState, eval_loss: float | None, patience: int) -> None:
    """Record an evaluation; set ``state.stopped_early`` after ``patience`` without progress."""
    if eval_loss is None:
        return
    if state.best_eval_loss is None or eval_loss < state.best_eval_loss:
        state.best_eval_loss, state.evals_without_improvement = eval_loss, 0
        return
    state.evals_without_improvement += 1
    if patience and state.evals_without_improvement >= patience:
        state.stopped_early = True


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def compute_loss(
    loss_fn: torch.nn.Module,
    teacher: TeacherFn | None,
    logits: torch.Tensor,
    batch: Batch,
    n_items: float,
    step: int | None,
) -> dict[str, torch.Tensor]:
    """Shift logits and targets into the next-token view; run the teacher; apply the loss."""
    view = next_token_view(logits, batch)
    teacher_out: dict[str, Any] = {}
    if teacher is not None:
        teacher_out = {
            k: _drop_last(v) for k, v in teacher(batch.input_ids, batch.attention_mask).items()
        }
    extra = {"step": step} if step is not None else {}
    return loss_fn(
        view.labels,
        student_logits=view.logits,
        **teacher_out,
        span_masks=view.span_masks or None,
        num_items_in_batch=n_items,
        **extra,
    )


def count_targets(batch: Batch) -> int:
    """Number of positions that carry a label in the next-token view (the loss normaliser)."""
    return int((batch.labels[:, 1:] != IGNORE_INDEX).sum())


def _drop_last(value: Any) -> Any:
    """Drop the last position of a teacher output, as the next-token view does for logits."""
    if isinstance(value, TopK):  # also TopK subclasses that carry a tail
        fields = dataclasses.fields(value)
        return dataclasses.replace(
            value, **{f.name: getattr(value, f.name)[:, :-1] for f in fields}
        )
    return value[:, :-1]


def _json(data: dict[str, Any]) -> str:
    import json

    return json.dumps(data, indent=2)
