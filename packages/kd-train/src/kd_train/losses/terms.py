r"""The per-token formulas of every logit-based term, on a block of positions.

This is the one place that turns student logits (and the teacher) into loss sums. Both the
dense path and the chunked path (:mod:`kd_train.losses.chunked`) call :func:`chunk_terms`
on rows of positions that count, so they agree by construction. For a row with student
logits :math:`z`, label :math:`y` and temperature :math:`T`:

.. math::

    \ell^{\mathrm{kd}} = s_T\, D\big(\mathrm{softmax}(z^t/T),\, \mathrm{softmax}(z/T)\big),
    \qquad s_T = T^2 \text{ if } \texttt{t2\_scale} \text{ else } 1

.. math::

    \ell^{\mathrm{ce}} = -\log \mathrm{softmax}(z)_y, \qquad
    \ell^{\mathrm{pref}} = \operatorname{softplus}\big(m - (z_y - \max_{v \ne y} z_v)\big)

:math:`D` is the configured :class:`~kd_train.losses.divergences.Divergence`. The
:math:`T^2` factor (Hinton et al., 2015) keeps the gradient's size independent of
:math:`T`, since softening by :math:`T` shrinks it by :math:`1/T^2`. Hard-label CE and the
preference term always use :math:`T = 1`. The code-mode preference asks the target token
to beat its strongest competitor by a margin :math:`m` in code-mode spans, where a single
wrong token breaks the code, so that greedy decoding reproduces the target there.

A span term ``span_<kind>`` adds the per-token CE (or KD) again on the tokens of that kind,
i.e. it up-weights those tokens; it is divided by the same denominator as every term.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch.nn import functional

from kd_train.data.schema import SPAN_KINDS
from kd_train.losses.checks import LossArgumentError
from kd_train.losses.divergences import Divergence, log_probs
from kd_train.losses.sparse import bucket_log_probs
from kd_train.losses.vocab import align_dense
from kd_train.teachers.base import TeacherOutput

#: Every term a loss can report, besides the weighted total ``"loss"``.
TERM_NAMES = ("kd", "ce", *(f"span_{kind}" for kind in SPAN_KINDS), "code_pref", "hidden")

#: Per-token losses a span term may use.
SPAN_LOSSES = ("ce", "kd")


@dataclass(frozen=True)
class TermSpec:
    """What :func:`chunk_terms` computes and with which settings.

    Args:
        terms: the names (from :data:`TERM_NAMES`) to compute.
        divergence: the KD divergence.
        temperature: softening of both distributions for the KD terms (> 0).
        t2_scale: multiply KD terms by :math:`T^2`.
        tail: top-k tail policy (:data:`~kd_train.losses.sparse.TAIL_POLICIES`).
        vocab_policy: vocabulary mismatch policy (:data:`~kd_train.losses.vocab.VOCAB_POLICIES`).
        span_loss: per-token loss of the span terms, ``"ce"`` or ``"kd"``.
        code_pref_margin: the margin :math:`m` of the code-mode preference term.
    """

    terms: frozenset[str] = field(default_factory=lambda: frozenset({"kd"}))
    divergence: Divergence = field(default_factory=Divergence)
    temperature: float = 1.0
    t2_scale: bool = True
    tail: str = "bucket"
    vocab_policy: str = "error"
    span_loss: str = "ce"
    code_pref_margin: float = 1.0


def kd_per_token(
    logits: torch.Tensor,
    teacher: TeacherOutput | None,
    spec: TermSpec,
    *,
    scratch: bool = False,
) -> torch.Tensor:
    """Return the (scaled) KD divergence at each row, ``[C]``; 0 where the teacher has no row.

    ``teacher`` holds the same rows (:meth:`~kd_train.teachers.base.TeacherOutput.rows`).
    With ``scratch``, dense float32 teacher logits are turned into log-probs in place (the
    rows are the caller's scratch copy), which saves one ``[C, V]`` tensor per chunk.
    """
    t = spec.temperature
    if teacher is None:
        raise LossArgumentError(
            "the KD term needs a teacher: pass teacher=TeacherOutput(...) (dense logits, "
            "hidden states with the lm_head, or top-k)"
        )
    if teacher.logits is not None:
        s_logits, t_logits = align_dense(logits, teacher.logits, spec.vocab_policy)
        s_logp = log_probs(s_logits, t)
        if scratch and t_logits.dtype == torch.float32 and not t_logits.requires_grad:
            t_logp = log_softmax_(t_logits, t)
        else:
            t_logp = log_probs(t_logits, t)
    elif teacher.ids is not None and teacher.logprobs is not None:
        s_logp, t_logp = bucket_log_probs(
            log_probs(logits, t),
            teacher.ids,
            teacher.logprobs,
            teacher_tail=teacher.tail,
            tail=spec.tail,
            temperature=t,
            vocab_policy=spec.vocab_policy,
        )
    else:
        raise LossArgumentError("the teacher rows hold neither logits nor top-k; call rows()")
    scale = t * t if spec.t2_scale else 1.0
    kd = spec.divergence(s_logp, t_logp) * scale
    if teacher.mask is not None:
        kd = torch.where(teacher.mask, kd, kd.new_zeros(()))
    return kd


def uses_per_token(loss: str, terms: Iterable[str], span_loss: str) -> bool:
    """True when the per-token ``loss`` (``"kd"`` or ``"ce"``) is needed by ``terms``.

    Its own term needs it, and so does every span term when ``span_loss`` is that loss.

    >>> from kd_train.losses.terms import uses_per_token
    >>> uses_per_token("kd", {"ce", "span_tool_name"}, span_loss="kd")
    True
    """
    names = set(terms)
    return loss in names or (span_loss == loss and any(n.startswith("span_") for n in names))


@torch.no_grad()
def log_softmax_(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``log_softmax(logits / temperature)`` computed in place over the last axis; returns it."""
    if temperature != 1.0:
        logits.div_(temperature)
    # Each row is read whole (max, sum) before it is written: safe in place, and no new
    # [C, V] buffer to allocate and fault in.
    return torch.log_softmax(logits, dim=-1, out=logits)


def code_preference_per_token(
    logits: torch.Tensor, labels: torch.Tensor, margin: float
) -> torch.Tensor:
    """Return ``softplus(margin - (z_y - max_{v != y} z_v))`` at each row, ``[C]``."""
    z = logits if logits.dtype == torch.float64 else logits.float()
    target = z.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    rival = z.scatter(-1, labels.unsqueeze(-1), -torch.inf).amax(dim=-1)
    return functional.softplus(margin - (target - rival))


def chunk_terms(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher: TeacherOutput | None,
    spans: dict[str, torch.Tensor],
    spec: TermSpec,
    *,
    teacher_scratch: bool = False,
) -> dict[str, torch.Tensor]:
    """Return the *sum* over rows of every term in ``spec.terms`` (``"hidden"`` excluded).

    Args:
        logits: student logits ``[C, V]`` at positions that count.
        labels: their labels ``[C]`` (all valid ids).
        teacher: the teacher at the same rows, or ``None`` (no KD term then).
        spans: bool ``[C]`` per span kind.
        spec: what to compute.
        teacher_scratch: the teacher rows are a copy this call may overwrite
            (:func:`kd_per_token`).
    """
    z = logits if logits.dtype == torch.float64 else logits.float()
    out: dict[str, torch.Tensor] = {}
    needs_kd = uses_per_token("kd", spec.terms, spec.span_loss)
    needs_ce = uses_per_token("ce", spec.terms, spec.span_loss)
    kd = kd_per_token(z, teacher, spec, scratch=teacher_scratch) if needs_kd else None
    ce = functional.cross_entropy(z, labels, reduction="none") if needs_ce else None
    if kd is not None and "kd" in spec.terms:
        out["kd"] = kd.sum()
    if ce is not None and "ce" in spec.terms:
        out["ce"] = ce.sum()
    per_token = kd if spec.span_loss == "kd" else ce
    for kind in SPAN_KINDS:
        name = f"span_{kind}"
        if name in spec.terms and per_token is not None:
            selected = spans.get(kind)
            out[name] = per_token[selected].sum() if selected is not None else z.new_zeros(())
    if "code_pref" in spec.terms:
        selected = spans.get("code_mode")
        if selected is None:
            out["code_pref"] = z.new_zeros(())
        else:
            pref = code_preference_per_token(z[selected], labels[selected], spec.code_pref_margin)
            out["code_pref"] = pref.sum()
    return out
