r"""The teacher protocol and its one output type, :class:`TeacherOutput`.

Every teacher kind (``hf``, ``cached``, ``records``, ``http``) maps a batch to a
:class:`TeacherOutput`, and the loss takes that type. It is either

* **dense**: ``logits [B, T, V]``, or the teacher's final ``hidden [B, T, H]`` with its
  ``lm_head`` (``head_weight [V, H]``, ``head_bias [V]``), from which the logits of a block
  of rows are made on demand, so that the whole ``[B, T, V]`` is never held; or
* **top-k**: ``ids`` and ``logprobs`` ``[B, T, k]`` (log-probs normalised over the
  teacher's full vocabulary) and, when the source kept it, the log of the mass outside the
  top-k, ``tail [B, T]``. Without a stored tail it is derived as
  :math:`\log(1 - \sum_j e^{\ell_j})`, which loses its digits when the top-k covers nearly
  all the mass: a source that can compute the tail exactly stores it.

**Alignment.** The output knows its next-token shift. ``aligned="logits"``: row ``t`` is
the distribution of the token after ``input_ids[:, t]`` (a causal LM's logits; ``hf``,
``cached``, ``http``). ``aligned="labels"``: row ``t`` is the distribution of the token *at*
``t`` (the rows a dataset stores per completion token; ``records``).
:meth:`TeacherOutput.next_token` turns either into the next-token view the losses take
(``logits[:, :-1]`` against ``labels[:, 1:]``, :mod:`kd_train.data.batching`), and
:meth:`TeacherOutput.rows` picks flattened rows of that view for one chunk of the loss.

``cross`` is set by a teacher with another tokenizer than the student's
(:class:`~kd_train.teachers.cross.CrossTokenizerTeacher`): its positions are then the
teacher's own tokens ``[B, T_t]``, and ``cross`` says which of them make up the same text as
which student tokens (:class:`~kd_train.data.alignment.CrossTokens`).

``mask`` (bool ``[B, T]``, optional) is false where the teacher has no row (a record
without top-k for its ``eos``): the KD terms skip those positions. ``layers`` holds the
teacher's per-layer hidden states for hidden-state matching (``hf`` only).

>>> import torch
>>> from kd_train.teachers.base import TeacherOutput
>>> logprobs = torch.log(torch.tensor([[[0.5, 0.3]]]))
>>> top = TeacherOutput(ids=torch.tensor([[[4, 7]]]), logprobs=logprobs)
>>> top.is_topk, round(float(top.tail_logprob().exp()), 4)
(True, 0.2)
>>> rows = TeacherOutput(logits=torch.randn(2, 5, 11)).next_token().rows(torch.tensor([0, 7]))
>>> tuple(rows.logits.shape)
(2, 11)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch

from kd_train.data.alignment import CrossTokens
from kd_train.data.batching import Batch
from kd_train.errors import KDTrainError

Alignment = Literal["logits", "labels", "view"]

#: Smallest tail mass a *derived* tail is given (a stored tail is used as it is). The top-k
#: of a confident teacher can round to a sum of 1 or more; a zero tail would make the
#: reverse divergences infinite where the student puts any mass outside the top-k.
MIN_DERIVED_TAIL = 1e-12


class TeacherOutputError(KDTrainError):
    """A teacher output is malformed (no distribution, shapes that disagree)."""


@dataclass(frozen=True)
class TeacherOutput:
    """One batch of a teacher: dense logits (or hidden + ``lm_head``), or top-k with tail.

    See the module docstring for the fields, their shapes and the alignment.
    """

    logits: torch.Tensor | None = None
    hidden: torch.Tensor | None = None
    head_weight: torch.Tensor | None = None
    head_bias: torch.Tensor | None = None
    ids: torch.Tensor | None = None
    logprobs: torch.Tensor | None = None
    tail: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    layers: tuple[torch.Tensor, ...] = ()
    aligned: Alignment = "logits"
    cross: CrossTokens | None = None

    def __post_init__(self) -> None:
        dense = self.logits is not None or (
            self.hidden is not None and self.head_weight is not None
        )
        topk = self.ids is not None and self.logprobs is not None
        if dense == topk:
            raise TeacherOutputError(
                "a TeacherOutput holds exactly one distribution: logits, hidden with "
                "head_weight, or ids with logprobs"
            )
        if (
            self.ids is not None
            and self.logprobs is not None
            and (self.ids.shape != self.logprobs.shape)
        ):
            raise TeacherOutputError(
                f"ids {tuple(self.ids.shape)} and logprobs {tuple(self.logprobs.shape)} "
                "must have the same shape"
            )

    @property
    def is_topk(self) -> bool:
        """True for a top-k output, false for a dense one."""
        return self.ids is not None

    @property
    def positions(self) -> tuple[int, ...]:
        """Shape of the positions, ``(B, T)`` (``(C,)`` for rows)."""
        for first in (self.ids, self.logits, self.hidden):
            if first is not None:
                return tuple(first.shape[:-1])
        raise TeacherOutputError("a TeacherOutput without a distribution has no positions")

    def topk_parts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(ids, logprobs, log tail)`` of a top-k output (:meth:`tail_logprob`).

        Raises:
            TeacherOutputError: the output is dense.
        """
        if self.ids is None or self.logprobs is None:
            raise TeacherOutputError("a dense teacher output has no top-k")
        return self.ids, self.logprobs, self.tail_logprob()

    def tail_logprob(self) -> torch.Tensor:
        r"""Log of the mass outside the top-k, ``[...]``: the stored tail, else derived.

        Derived: :math:`\log\max(1 - \sum_j e^{\ell_j},\ 10^{-12})`
        (:data:`MIN_DERIVED_TAIL`), finite even when the top-k rounds to all the mass.
        """
        if self.logprobs is None:
            raise TeacherOutputError("a dense teacher output has no top-k tail")
        if self.tail is not None:
            return self.tail.float()
        covered = torch.logsumexp(self.logprobs.float(), dim=-1).clamp(max=0.0)
        return torch.log(torch.clamp(-torch.expm1(covered), min=MIN_DERIVED_TAIL))

    def map(
        self, fn: Callable[[torch.Tensor], torch.Tensor], *, weights: bool = False
    ) -> TeacherOutput:
        """Apply ``fn`` to every per-position tensor (and, with ``weights``, to the head)."""

        def each(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else fn(t)

        head = (
            (each(self.head_weight), each(self.head_bias))
            if weights
            else (
                self.head_weight,
                self.head_bias,
            )
        )
        return dataclasses.replace(
            self,
            logits=each(self.logits),
            hidden=each(self.hidden),
            head_weight=head[0],
            head_bias=head[1],
            ids=each(self.ids),
            logprobs=each(self.logprobs),
            tail=each(self.tail),
            mask=each(self.mask),
            layers=tuple(fn(t) for t in self.layers),
        )

    def to(self, device: torch.device | str) -> TeacherOutput:
        """Return the output with every tensor on ``device``."""
        moved = self.map(lambda t: t.to(device), weights=True)
        if self.cross is None:
            return moved
        return dataclasses.replace(moved, cross=self.cross.to(device))

    def next_token(self) -> TeacherOutput:
        """Shift into the next-token view ``[B, T - 1, ...]`` (a view output is returned as is).

        ``aligned="logits"`` drops the last position (like ``logits[:, :-1]``),
        ``aligned="labels"`` the first (like ``labels[:, 1:]``); hidden layers always
        follow the student's logits (``[:, :-1]``).
        """
        if self.aligned == "view":
            return self
        cut = slice(None, -1) if self.aligned == "logits" else slice(1, None)
        shifted = self.map(lambda t: t[:, cut])
        return dataclasses.replace(
            shifted, layers=tuple(t[:, :-1] for t in self.layers), aligned="view"
        )

    def rows(self, idx: torch.Tensor) -> TeacherOutput:
        """The rows ``idx`` of the flattened view ``[B * T]``, as ``[C, ...]`` outputs.

        A hidden + ``lm_head`` output makes the logits of just these rows (no gradient).
        Layers are not carried (hidden-state matching reads ``layers`` whole).
        """
        if self.aligned != "view":
            raise TeacherOutputError("call next_token() before rows(): rows index the view")

        def pick(t: torch.Tensor | None, trailing: int) -> torch.Tensor | None:
            if t is None:
                return None
            lead = t.shape[: t.dim() - trailing]
            return t.reshape(math.prod(lead), *t.shape[t.dim() - trailing :])[idx]

        logits = pick(self.logits, 1)
        hidden = pick(self.hidden, 1)
        if logits is None and hidden is not None and self.head_weight is not None:
            with torch.no_grad():
                logits = hidden @ self.head_weight.T
                if self.head_bias is not None:
                    logits = logits + self.head_bias
        if logits is not None:
            return TeacherOutput(logits=logits.detach(), mask=pick(self.mask, 0), aligned="view")
        return TeacherOutput(
            ids=pick(self.ids, 1),
            logprobs=None if self.logprobs is None else pick(self.logprobs.detach(), 1),
            tail=pick(self.tail, 0),
            mask=pick(self.mask, 0),
            aligned="view",
        )


@runtime_checkable
class Teacher(Protocol):
    """What every teacher kind provides: a batch in, one :class:`TeacherOutput` out.

    ``batch`` is a collated :class:`~kd_train.data.batching.Batch` (``input_ids`` and
    ``attention_mask`` ``[B, T]``, right-padded; the ``records`` kind reads its stored
    top-k). Values at padded positions are meaningless; the loss masks them.
    """

    @property
    def vocab_size(self) -> int:
        """Size of the teacher's vocabulary (every id it returns is below it)."""
        ...

    def __call__(self, batch: Batch) -> TeacherOutput:
        """Return the teacher's distribution at every position of the batch."""
        ...
