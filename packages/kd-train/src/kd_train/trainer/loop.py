"""The distillation loop: setup, loop, checkpoint, save. Read it top to bottom.

One optimiser step::

    lr      = lr_at(step)                                  warmup, then cosine
    batches = the next grad_accum micro-batches           cursor (epoch, index) advances
    N       = label tokens in those batches, on all ranks  one normaliser for the step
    for each micro-batch:
        teacher = teacher(batch)                            dense, top-k + tail, or nothing
        hidden  = student.base_model(input_ids)             bf16 autocast if asked
        terms   = loss(hidden[:, :-1], lm_head, labels[:, 1:],
                       teacher.next_token(), spans, N)      chunk by chunk: no [B, T, V]
        backward(terms["loss"] * world_size)                DDP and FSDP average over ranks
    clip gradients; AdamW step
    log a metrics row; evaluate / stop early / checkpoint when due
    (before the step: from qat.start_step on, the student's linear layers fake-quantize)

Because every micro-batch loss is a sum over tokens divided by the same ``N``, the step's
gradient is the token mean over the whole global batch, whatever the split into
micro-batches and processes. The loss is computed from the student's hidden states and
its ``lm_head`` one chunk of ``loss.chunk_size`` positions at a time
(:mod:`kd_train.trainer.forward`), so the student's full-vocabulary logits are never held.
With ``distributed.strategy: fsdp`` the student is sharded
across processes (see :mod:`kd_train.trainer.distributed`); the loop is the same, and
checkpoints and the final model hold the whole, gathered state.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kd_train.atomic import atomic_write_text
from kd_train.data import Batch, collate
from kd_train.errors import KDTrainError
from kd_train.teachers.base import Teacher
from kd_train.teachers.hf import HFTeacher
from kd_train.trainer import cross_tokenizer, distributed, lora, qat
from kd_train.trainer.batches import batches_per_epoch, epoch_order, micro_batch
from kd_train.trainer.checkpoint import (
    TrainState,
    check_resume,
    checkpoint_dirs,
    gather_state,
    latest_checkpoint,
    load_checkpoint,
    require_finite_step,
    write_checkpoint,
)
from kd_train.trainer.components import (
    IGNORE_INDEX,
    Example,
    load_splits,
    load_student,
    load_teacher,
    require_cache_covers,
    require_teacher_serves,
)
from kd_train.trainer.config import OptimConfig, RunConfig
from kd_train.trainer.distributed import DistContext
from kd_train.trainer.metrics import MetricsLog, peak_memory_mb, postfix, progress_bar
from kd_train.trainer.on_policy import Sampler, Source, eos_token_ids, step_source
from kd_train.trainer.outputs import run_fingerprints, save_student, write_run_manifest


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
    environ: Mapping[str, str] | None = None,
    dense_reference: bool = False,
    allow_change: tuple[str, ...] = (),
) -> TrainResult:
    """Run (or, with ``resume``, continue) the distillation described by ``config``.

    ``environ`` holds the environment variables a teacher may name (the ``http`` teacher's
    ``api_key_env``); the command line passes the process environment. ``dense_reference``
    computes the loss from the student's full logits: the reference the chunked path is
    tested against, never what a run needs. A resumed run must have the checkpoint's config
    and fingerprints, but for the keys named in ``allow_change``
    (:func:`kd_train.trainer.checkpoint.check_resume`).
    """
    run_dir, tc = Path(config.output_dir), config.train
    device = ctx.device

    # ---- setup -------------------------------------------------------------------------
    distributed.init(ctx)
    if tc.threads is not None:
        torch.set_num_threads(tc.threads)
    seed_everything(tc.seed)
    student, tokenizer = load_student(config.student, tc.seed)
    student.to(device)
    teacher, eval_teacher = load_teacher(
        config.teacher,
        device,
        tokenizer,
        config.data,
        run_dir=run_dir,
        environ=environ or {},
        layers=config.loss.hidden is not None,
    )
    splits = load_splits(config.data, tokenizer)
    teacher, eval_teacher = cross_tokenizer.wrap_teachers(
        config, tokenizer, teacher, eval_teacher, splits
    )
    train_set, eval_set = splits.train, splits.eval
    require_cache_covers(teacher, train_set, "train", config.data.max_length)
    require_cache_covers(eval_teacher, eval_set, "eval", config.data.max_length)
    require_teacher_serves(config.loss, teacher, train_set, "train")
    require_teacher_serves(config.loss, eval_teacher, eval_set, "eval")
    n_batches = batches_per_epoch(len(train_set), tc.batch_size, ctx.world_size)
    on_policy = tc.on_policy
    sampler = generator_copy = None
    if on_policy is not None:
        sampler = Sampler(
            on_policy,
            seed=tc.seed,
            rank=ctx.rank,
            pad_id=int(tokenizer.pad_token_id),
            eos_ids=eos_token_ids(student, tokenizer),
            max_length=config.data.max_length,
            device=device,
        )
        if config.distributed.strategy == "fsdp" and ctx.world_size > 1:
            # FSDP shards the student in place; sampling runs on a whole copy of it.
            generator_copy = copy.deepcopy(student)
    distiller = cross_tokenizer.make_distiller(config.loss, student, teacher, dense_reference)
    distiller.to(device)
    trained = distiller.trainable()  # the state checkpoints hold
    # DDP wraps the distiller; FSDP shards it in place, which is why the optimiser comes after.
    model = distributed.wrap(distiller, ctx, config.distributed.strategy)
    optimizer = torch.optim.AdamW(
        [p for p in trained.parameters() if p.requires_grad],  # a LoRA student: the adapters
        lr=config.optim.lr,
        betas=config.optim.betas,
        eps=config.optim.eps,
        weight_decay=config.optim.weight_decay,
    )
    state = TrainState()
    fingerprints = run_fingerprints(config, tokenizer)  # stored in checkpoints for resume
    if resume:
        ckpt = latest_checkpoint(run_dir)  # verified; a bad latest one stops here, named
        if ckpt is None:
            raise KDTrainError(f"nothing to resume: {run_dir / 'checkpoints'} has no checkpoint")
        accepted = check_resume(ckpt, config.to_dict(), fingerprints, allow_change)
        state = load_checkpoint(ckpt, trained, optimizer)  # every rank reads it
        state.changes += accepted
        if sampler is not None and state.sampler_rng is not None:
            sampler.load_state(_rank_entry(state.sampler_rng, ctx, ckpt))
    elif checkpoint_dirs(run_dir):
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

    def rollouts(batches: list[Batch], source: Source) -> list[Batch]:
        """The step's batches with their completions from ``source`` (sampled when asked)."""
        if sampler is None or source == "data":
            return batches
        if source == "teacher":
            if not isinstance(teacher, HFTeacher):  # the config refuses this
                raise KDTrainError("train.on_policy.seq_kd needs teacher.kind 'hf'")
            sampling_model = teacher.model
        else:
            sampling_model = student
            if generator_copy is not None:
                distributed.copy_full_weights(student, generator_copy)  # every rank
                sampling_model = generator_copy
        out = []
        for i, batch in enumerate(batches):
            rollout = sampler.sample(sampling_model, batch, source)
            timing["generated"] += rollout.generated
            timing["sampled_rows"] += rollout.rows
            if i == 0 and samples_log.enabled and on_policy is not None:
                write_samples(
                    samples_log,
                    rollout.batch,
                    source,
                    state.step + 1,
                    tokenizer,
                    on_policy.log_samples,
                )
            out.append(rollout.batch)
        return out

    def loss_terms(batch: Batch, n_items: float, step: int) -> dict[str, torch.Tensor]:
        """Run the teacher, then the student and the loss; the terms of one micro-batch."""
        batch = batch.to(device)
        t0 = time.perf_counter()
        taught = None if teacher is None else teacher(batch)
        timing["teacher_s"] += time.perf_counter() - t0
        with autocast:
            terms: dict[str, torch.Tensor] = model(batch, taught, n_items, step)
        return terms

    # ---- loop --------------------------------------------------------------------------
    log = MetricsLog(run_dir / "metrics.jsonl", state.step if resume else None, ctx.is_main)
    samples_log = MetricsLog(
        run_dir / "samples.jsonl",
        state.step if resume else None,
        ctx.is_main and sampler is not None,
    )
    timing: dict[str, float] = {}
    bar = progress_bar(tc.max_steps, state.step, progress and ctx.is_main)
    row: dict[str, Any] = {}
    started = time.perf_counter()
    model.train()
    while state.step < tc.max_steps and not state.stopped_early:
        t0 = time.perf_counter()
        state.qat = qat.switch_at_step(student, config.qat, state.step, state.qat)
        lr = lr_at(state.step, config.optim, tc.max_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        timing.update(generate_s=0.0, teacher_s=0.0, generated=0, sampled_rows=0)
        source: Source = (
            "data" if on_policy is None else step_source(on_policy, tc.seed, state.step)
        )
        batches = [next_batch() for _ in range(tc.grad_accum)]
        t_gen = time.perf_counter()
        batches = rollouts(batches, source)
        timing["generate_s"] = time.perf_counter() - t_gen
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
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trained.parameters(), max_norm))
        # Stop before the optimiser step if any rank saw a NaN/inf: no weight takes it.
        finite = {**step_terms, "grad_norm": grad_norm}
        elsewhere = distributed.sum_across(float(not all(map(math.isfinite, finite.values()))), ctx)
        require_finite_step(state.step + 1, finite, elsewhere=elsewhere > 0)
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
        if on_policy is not None:
            row.update(on_policy_figures(source, timing, seconds, ctx))
        if tc.eval_every and (state.step % tc.eval_every == 0 or state.step == tc.max_steps):
            eval_terms = evaluate(model, eval_teacher, eval_set, tc.batch_size, pad_id, device)
            row.update({f"eval_{k}": v for k, v in eval_terms.items()})
            update_early_stopping(state, eval_terms.get("loss"), tc.early_stopping_patience)
            model.train()
        log.write(row)
        bar.update(1)
        bar.set_postfix(postfix(row, sorted(step_terms), timed=on_policy is not None))
        if (tc.checkpoint_every and state.step % tc.checkpoint_every == 0) or (
            state.step == tc.max_steps or state.stopped_early
        ):
            full = gather_state(trained, optimizer)  # every rank takes part; rank 0 gets it
            if sampler is not None:
                state.sampler_rng = distributed.gather_text(sampler.state(), ctx)
            if ctx.is_main:
                write_checkpoint(
                    run_dir, state, full, config.to_dict(), tc.keep_checkpoints, fingerprints
                )
            distributed.barrier(ctx)
    bar.close()
    log.close()
    samples_log.close()

    # ---- save --------------------------------------------------------------------------
    student_dir = run_dir / "student"
    student = lora.merge_adapters(student)  # a LoRA student is saved merged
    final = gather_state(student)  # the whole weights on rank 0, FSDP shards gathered
    digests = distributed.replica_digests(student, ctx)
    if ctx.is_main:
        quantized = qat.saved_record(student, config.qat, state.qat)
        save_student(student, tokenizer, student_dir, final.state_dict(), quantized)
        write_run_manifest(
            run_dir,
            config,
            state,
            tokenizer,
            replica_sha256=digests,
            held_out=splits.overlap.to_dict(),
        )
    distributed.barrier(ctx)
    distributed.shutdown(ctx)
    return TrainResult(run_dir, student_dir, state, row)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    teacher: Teacher | None,
    examples: list[Example],
    batch_size: int,
    pad_id: int,
    device: torch.device,
) -> dict[str, float]:
    """Token-mean loss terms of the distiller ``model`` over ``examples`` (every rank: all)."""
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
        terms = model(batch, None if teacher is None else teacher(batch), n_items)
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


def on_policy_figures(
    source: Source, timing: dict[str, float], seconds: float, ctx: DistContext
) -> dict[str, Any]:
    """The metrics of an on-policy step: its source, its time split and the sampled length.

    ``generate_s``, ``teacher_s`` and ``train_s`` split the step's wall time (``train_s``
    is the rest: the student's forward and backward, the loss and the optimiser);
    ``gen_len_mean`` is the mean sampled completion length over all ranks (0 when the
    step used the dataset's completions).
    """
    rows = distributed.sum_across(float(timing["sampled_rows"]), ctx)
    generated = distributed.sum_across(float(timing["generated"]), ctx)
    return {
        "source": source,
        "generate_s": timing["generate_s"],
        "teacher_s": timing["teacher_s"],
        "train_s": max(seconds - timing["generate_s"] - timing["teacher_s"], 0.0),
        "gen_len_mean": generated / rows if rows else 0.0,
    }


def write_samples(
    log: MetricsLog, batch: Batch, source: Source, step: int, tokenizer: Any, limit: int
) -> None:
    """Append the first ``limit`` sampled rows of ``batch`` to ``samples.jsonl``."""
    for row in range(min(limit, batch.input_ids.shape[0])):
        keep = batch.labels[row] != IGNORE_INDEX
        completion = [int(t) for t in batch.input_ids[row][keep].tolist()]
        log.write(
            {
                "step": step,
                "source": source,
                "record_id": batch.record_ids[row],
                "completion_ids": completion,
                "completion": tokenizer.decode(completion),
            }
        )


def _rank_entry(states: list[str], ctx: DistContext, ckpt: Path) -> str:
    """This rank's sampler state from a checkpoint written by the same number of processes."""
    if len(states) != ctx.world_size:
        raise KDTrainError(
            f"checkpoint {ckpt} holds the on-policy sampler states of {len(states)} "
            f"processes, and this run has {ctx.world_size}: resume an on-policy run with the "
            "same number of processes, or its samples would differ from the original run's"
        )
    return states[ctx.rank]


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def count_targets(batch: Batch) -> int:
    """Number of positions that carry a label in the next-token view (the loss normaliser)."""
    return int((batch.labels[:, 1:] != IGNORE_INDEX).sum())


def _json(data: dict[str, Any]) -> str:
    import json

    return json.dumps(data, indent=2)
