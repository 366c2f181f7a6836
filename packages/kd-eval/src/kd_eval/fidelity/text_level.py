r"""Fidelity figures that do not depend on the tokenizer: bits per byte, text-level agreement.

Two models with different tokenizers predict different tokens, so per-token KL and
perplexity cannot be compared between them. Over the completion text :math:`x` of a record,
scored by a model with its own tokenizer as tokens :math:`x_1 \dots x_n`:

* **bits per byte**: :math:`-\sum_t \log_2 p(x_t \mid x_{<t}) \,/\, |x|_{\text{UTF-8}}`,
  the code length of the completion per byte of text (lower is better), the same figure
  whatever the vocabulary;
* **text-level top-1 agreement**: the two tokenisations are aligned by character offsets
  (:func:`kd_train.data.alignment.align_offsets`); over the spans that are one token on
  each side, the share where the teacher's most likely next token and the student's stand
  for the same text (:func:`kd_train.data.vocab_map.build_vocab_map`). With one tokenizer
  every span is one token on each side and it is the per-token top-1 agreement.

>>> import torch
>>> from kd_eval.fidelity.text_level import bits_per_byte
>>> logits = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.75]]))
>>> round(bits_per_byte(logits, torch.tensor([0, 0]), n_bytes=3), 6)  # (1 + 2 bits) / 3 bytes
1.0
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812
from kd_train.data.alignment import align_offsets

from kd_eval.errors import MetricInputError


def bits_per_byte(logits: torch.Tensor, targets: torch.Tensor, n_bytes: int) -> float:
    """Return ``sum(-log2 p(target)) / n_bytes`` over the rows of ``logits [C, V]``.

    Raises:
        MetricInputError: ``n_bytes < 1``.
    """
    if n_bytes < 1:
        raise MetricInputError(f"bits per byte needs at least one byte of text, got {n_bytes}")
    nll = F.cross_entropy(logits.double(), targets, reduction="sum")
    return float(nll) / math.log(2.0) / n_bytes


def text_top1(
    teacher_logits: torch.Tensor,
    teacher_offsets: torch.Tensor,
    student_logits: torch.Tensor,
    student_offsets: torch.Tensor,
    teacher_to_student: dict[int, int],
) -> tuple[int, int]:
    """``(agreeing, spans)`` over the spans that are one token on both sides.

    Args:
        teacher_logits: ``[C_t, V_t]``, row ``i`` predicting the teacher's completion token ``i``.
        teacher_offsets: its completion tokens' characters, ``[C_t, 2]``.
        student_logits: ``[C_s, V_s]``, the same for the student.
        student_offsets: ``[C_s, 2]``.
        teacher_to_student: the one-to-one map of ids with the same text.

    >>> import torch
    >>> from kd_eval.fidelity.text_level import text_top1
    >>> offsets = torch.tensor([[0, 1], [1, 2]])
    >>> t = torch.tensor([[0.0, 9.0], [9.0, 0.0]])
    >>> s = torch.tensor([[9.0, 0.0, 0.0], [0.0, 0.0, 9.0]])  # student id 0 is teacher id 1
    >>> text_top1(t, offsets, s, offsets, {1: 0, 0: 1})
    (1, 2)
    """
    agree = spans = 0
    groups = align_offsets(student_offsets.tolist(), teacher_offsets.tolist())
    for (s0, s1), (t0, t1) in groups:
        if s1 - s0 != 1 or t1 - t0 != 1:
            continue
        spans += 1
        top_t, top_s = int(teacher_logits[t0].argmax()), int(student_logits[s0].argmax())
        agree += int(teacher_to_student.get(top_t) == top_s)
    return agree, spans
