"""Distillation losses: divergences, masking, top-k teachers, chunking, spans, schedules.

The trainer builds one :class:`~kd_train.losses.combined.DistillationLoss` from a
:class:`~kd_train.losses.config.LossConfig` and calls it on every batch; the rest are the
pieces it is made of, usable on their own. Inputs are already aligned (position ``t`` of
logits, teacher, labels and masks is one predicted token); the caller shifts. See the
concepts page "Distillation losses" for the maths.
"""

from kd_train.losses.checks import LossArgumentError
from kd_train.losses.chunked import chunked_linear_loss
from kd_train.losses.combined import DistillationLoss
from kd_train.losses.config import HiddenConfig, LossConfig
from kd_train.losses.divergences import (
    DIVERGENCES,
    Divergence,
    forward_kl,
    jsd,
    log_probs,
    reverse_kl,
    skew_forward_kl,
    skew_reverse_kl,
    tvd,
)
from kd_train.losses.hidden import HiddenStateLoss
from kd_train.losses.masking import IGNORE_INDEX, denominator, token_mask
from kd_train.losses.schedule import LinearWarmup, Weight, weight_at
from kd_train.losses.spans import span_mask_tensors, span_token_masks
from kd_train.losses.sparse import TAIL_POLICIES, bucket_log_probs
from kd_train.losses.terms import TERM_NAMES
from kd_train.losses.vocab import VOCAB_POLICIES, align_dense

__all__ = [
    "DIVERGENCES",
    "IGNORE_INDEX",
    "TAIL_POLICIES",
    "TERM_NAMES",
    "VOCAB_POLICIES",
    "DistillationLoss",
    "Divergence",
    "HiddenConfig",
    "HiddenStateLoss",
    "LinearWarmup",
    "LossArgumentError",
    "LossConfig",
    "Weight",
    "align_dense",
    "bucket_log_probs",
    "chunked_linear_loss",
    "denominator",
    "forward_kl",
    "jsd",
    "log_probs",
    "reverse_kl",
    "skew_forward_kl",
    "skew_reverse_kl",
    "span_mask_tensors",
    "span_token_masks",
    "token_mask",
    "tvd",
    "weight_at",
]
