"""The run config's student, data, optimiser, loop and distributed sections.

Each section is a :class:`~kd_train.typed_config.ConfigModel`: unknown keys, wrong types,
out-of-range and non-finite values are refused with the key path. The whole run config is
:class:`kd_train.trainer.config.RunConfig`.

>>> from kd_train.trainer.train_config import TrainConfig
>>> TrainConfig(max_steps=10).precision
'fp32'
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, Strict, model_validator

from kd_train.typed_config import (
    Bool,
    ConfigModel,
    Int,
    InvalidConfigError,
    Json,
    OneOf,
    PathStr,
    Str,
)

#: The values ``train.precision`` accepts.
PRECISIONS = ("fp32", "bf16")
#: The values ``distributed.strategy`` accepts.
STRATEGIES = ("ddp", "fsdp")
#: The values ``qat.scheme`` accepts.
QAT_SCHEMES = ("int8", "int4")
#: The int4 weight group sizes ``qat.group_size`` accepts.
QAT_GROUP_SIZES = (32, 64)

NonNegative = Annotated[float, Strict(), Field(ge=0.0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
Positive = Annotated[int, Strict(), Field(ge=1)]
Beta = Annotated[float, Strict(), Field(ge=0.0, lt=1.0)]


class LoraConfig(ConfigModel):
    """The ``student.lora`` section: train low-rank adapters (peft LoRA) instead of the student.

    Each linear layer named in ``target_modules`` gets ``W x + (alpha / rank) · B A x`` with
    ``A`` ``[rank, in]`` and ``B`` ``[out, rank]`` (``B`` starts at 0, so the first step starts
    from the student as it is); only ``A`` and ``B`` train
    (:mod:`kd_train.trainer.lora`). The final student is saved with the adapters merged.

    >>> from kd_train.trainer.train_config import LoraConfig
    >>> LoraConfig(rank=4).target_modules
    ('q_proj', 'k_proj', 'v_proj', 'o_proj')
    """

    rank: Positive = Field(default=8, description="The rank of each adapter.")
    alpha: Annotated[float, Strict(), Field(gt=0.0)] = Field(
        default=16.0, description="The adapters' scale is ``alpha / rank``."
    )
    dropout: Beta = Field(default=0.0, description="Dropout on the adapters' input, in [0, 1).")
    target_modules: Annotated[tuple[Str, ...], Field(min_length=1)] = Field(
        default=("q_proj", "k_proj", "v_proj", "o_proj"),
        description="Names (last part) of the linear layers that get adapters.",
    )


class StudentConfig(ConfigModel):
    """The student: a saved ``transformers`` model dir, or a config plus a tokenizer dir.

    ``config`` is passed to ``transformers.AutoConfig.for_model`` (so it needs
    ``model_type``); GQA students set ``num_key_value_heads < num_attention_heads``.
    """

    path: PathStr | None = Field(
        default=None, description="A saved ``transformers`` model directory."
    )
    config: dict[Str, Json] | None = Field(
        default=None,
        description="A transformers config (with model_type) to build an untrained student from.",
    )
    tokenizer: PathStr | None = Field(
        default=None, description="The tokenizer directory (required with ``config``)."
    )
    lora: LoraConfig | None = Field(
        default=None,
        description="Train LoRA adapters (peft) instead of every weight (``null``: full training).",
    )

    @model_validator(mode="after")
    def _path_or_config(self) -> StudentConfig:
        """Exactly one of ``path`` and ``config``; a config needs a model type and a tokenizer."""
        if (self.path is None) == (self.config is None):
            raise InvalidConfigError(
                "student: give exactly one of 'path' (a saved model) or 'config'"
            )
        if self.config is not None:
            if "model_type" not in self.config:
                raise InvalidConfigError(
                    "student.config.model_type: required (e.g. 'llama', 'qwen2')"
                )
            if self.tokenizer is None:
                raise InvalidConfigError("student.tokenizer: required with student.config")
        return self


class DataConfig(ConfigModel):
    """KD datasets (JSONL of :class:`kd_train.data.schema.KDRecord`) and tokenisation limits.

    Without ``eval``, the last ``eval_fraction`` of the train file is held out.
    """

    train: PathStr = Field(description="The training records.")
    eval: PathStr | None = Field(
        default=None,
        description="A held-out file; without it the last eval_fraction of train is held out.",
    )
    eval_fraction: Annotated[float, Strict(), Field(ge=0.0, le=0.9)] = Field(
        default=0.1,
        description="Share of ``train`` held out for evaluation when there is no ``eval`` file.",
    )
    max_length: Annotated[int, Strict(), Field(ge=2)] = Field(
        default=256, description="Tokens per example at most."
    )


class OptimConfig(ConfigModel):
    """AdamW and its schedule: linear warmup then cosine decay to ``min_lr_ratio * lr``."""

    lr: NonNegative = Field(default=3e-4, description="Peak learning rate.")
    weight_decay: NonNegative = Field(default=0.0, description="AdamW weight decay.")
    betas: tuple[Beta, Beta] = Field(
        default=(0.9, 0.999), description="AdamW betas, two numbers in ``[0, 1)``."
    )
    eps: NonNegative = Field(default=1e-8, description="AdamW epsilon.")
    warmup_steps: NonNegativeInt = Field(default=0, description="Steps of linear warmup.")
    min_lr_ratio: Annotated[float, Strict(), Field(ge=0.0, le=1.0)] = Field(
        default=0.1, description="The cosine decay ends at ``min_lr_ratio * lr``."
    )


class OnPolicyConfig(ConfigModel):
    """The ``train.on_policy`` section: train on completions sampled during the run.

    On a fraction ``lmbda`` of the optimiser steps the student samples a completion for
    each prompt of the step's batches (the dataset's completion is dropped) and the
    teacher scores the sampled tokens; the loss then covers only those tokens. With
    ``seq_kd`` the teacher samples the completion on the other steps (sequence-level KD);
    without it they use the dataset's completion (off-policy). ``lmbda: 0`` without
    ``seq_kd`` is plain off-policy distillation.

    The names and meanings follow TRL's ``GKDConfig`` (see the on-policy guide for the
    exact mapping): ``lmbda``, ``temperature``, ``max_new_tokens`` and ``seq_kd`` are
    TRL's; TRL's ``beta`` is ``loss.divergence: jsd`` with ``loss.beta``.

    >>> from kd_train.trainer.train_config import OnPolicyConfig
    >>> OnPolicyConfig(lmbda=1.0).max_new_tokens
    128
    """

    lmbda: Annotated[float, Strict(), Field(ge=0.0, le=1.0)] = Field(
        default=0.5,
        description="Fraction of optimiser steps on which the student samples the completions.",
    )
    temperature: Annotated[float, Strict(), Field(gt=0.0, le=100.0)] = Field(
        default=0.9, description="Sampling temperature (TRL's GKDConfig.temperature)."
    )
    top_p: Annotated[float, Strict(), Field(gt=0.0, le=1.0)] = Field(
        default=1.0, description="Nucleus sampling: keep the smallest set of mass >= top_p."
    )
    top_k: NonNegativeInt = Field(
        default=0, description="Sample among the k most likely tokens (0: no limit, as TRL)."
    )
    max_new_tokens: Positive = Field(
        default=128, description="Most tokens sampled per completion (eos included)."
    )
    seq_kd: Bool = Field(
        default=False,
        description="On steps the student does not sample, the teacher samples the completion.",
    )
    log_samples: NonNegativeInt = Field(
        default=1,
        description="Sampled rows per sampling step written to ``samples.jsonl`` (0: none).",
    )


class TrainConfig(ConfigModel):
    """Loop settings. One optimiser step sees ``batch_size * grad_accum * world_size`` examples.

    ``threads`` sets ``torch.set_num_threads`` for the run (small models on a busy CPU
    are often fastest with 1); ``None`` keeps PyTorch's default.
    """

    max_steps: Positive = Field(description="Optimiser steps of the run.")
    seed: Int = Field(
        default=0, description="Seed of the student's init, the data order and dropout."
    )
    batch_size: Positive = Field(default=8, description="Examples per process and micro-batch.")
    grad_accum: Positive = Field(default=1, description="Micro-batches per optimiser step.")
    clip_norm: NonNegative | None = Field(
        default=1.0,
        description="Gradient-norm clip (``null``: no clipping; the norm is still logged).",
    )
    precision: Annotated[str, OneOf(PRECISIONS)] = Field(
        default="fp32", description="``fp32``, or ``bf16`` autocast."
    )
    eval_every: NonNegativeInt = Field(
        default=0, description="Steps between evaluations (0: never)."
    )
    early_stopping_patience: NonNegativeInt = Field(
        default=0,
        description="Evaluations without a better eval loss before stopping (0: never stop).",
    )
    checkpoint_every: NonNegativeInt = Field(
        default=0, description="Steps between checkpoints (0: only at the end)."
    )
    keep_checkpoints: Positive = Field(default=2, description="Checkpoints kept on disk.")
    threads: Positive | None = Field(
        default=None,
        description="``torch.set_num_threads`` for the run (``null``: PyTorch's default).",
    )
    on_policy: OnPolicyConfig | None = Field(
        default=None,
        description="On-policy / sequence-level distillation (``null``: off-policy only).",
    )


class DistributedConfig(ConfigModel):
    """How the processes of a ``torchrun`` launch share the student (ignored in one process).

    ``ddp``: every process holds the whole model and optimiser state; gradients are
    all-reduced. ``fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``); every process
    holds a shard of the weights, gradients and optimiser state; checkpoints and the final
    model are still full (gathered on rank 0).
    """

    strategy: Annotated[str, OneOf(STRATEGIES)] = Field(
        default="ddp", description="``ddp`` or ``fsdp`` (FSDP2)."
    )


class QATConfig(ConfigModel):
    """The ``qat`` section: quantization-aware distillation from ``start_step`` on.

    From optimiser step ``start_step`` the student's linear layers (all but the output
    head) compute with fake-quantized weights, and for ``int8`` activations, through
    torchao's QAT (:mod:`kd_train.trainer.qat`); gradients pass straight through the
    rounding. Schemes:

    ``int8``
        int8 weights, symmetric, one scale per output channel; int8 activations,
        asymmetric, one scale and zero point per token, computed at run time.
    ``int4``
        int4 weights, symmetric, one scale per ``group_size`` input columns; activations
        stay float.

    >>> from kd_train.trainer.train_config import QATConfig
    >>> QATConfig(scheme="int4").weight_group_size
    32
    """

    scheme: Annotated[str, OneOf(QAT_SCHEMES)] = Field(
        description="``int8`` (int8 per-channel weights, int8 per-token dynamic activations) "
        "or ``int4`` (int4 grouped weights only)."
    )
    group_size: Annotated[int, Strict(), Field(ge=1)] | None = Field(
        default=None,
        description="Input columns per int4 weight scale, 32 or 64 (``int4`` only; default 32).",
    )
    start_step: NonNegativeInt = Field(
        default=0, description="The optimiser step from which the student trains fake-quantized."
    )

    @model_validator(mode="after")
    def _group_size_fits_scheme(self) -> QATConfig:
        """``group_size`` is an int4 setting, and one of :data:`QAT_GROUP_SIZES`."""
        if self.group_size is None:
            return self
        if self.scheme != "int4":
            raise InvalidConfigError(
                f"qat.group_size: applies to scheme 'int4' only (scheme is {self.scheme!r}, "
                "whose weights have one scale per output channel); remove qat.group_size"
            )
        if self.group_size not in QAT_GROUP_SIZES:
            raise InvalidConfigError(
                f"qat.group_size: {self.group_size} is not allowed (allowed: "
                f"{', '.join(map(str, QAT_GROUP_SIZES))})"
            )
        return self

    @property
    def weight_group_size(self) -> int | None:
        """The input columns per int4 weight scale (``group_size``, 32 by default), else None."""
        if self.scheme != "int4":
            return None
        return self.group_size or QAT_GROUP_SIZES[0]
