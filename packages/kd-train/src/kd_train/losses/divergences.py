r"""Divergences between the teacher's and the student's next-token distributions.

Every function here takes log-probabilities ``[..., V]`` (student first, then teacher) and
returns one value per position ``[...]``; masking and averaging are done by the caller
(:mod:`kd_train.losses.masking`). Inputs are promoted to float32 (float64 stays float64),
so bf16 logits are compared in float32 log space.

Notation: :math:`p` is the teacher, :math:`q` the student, both over the vocabulary
:math:`V`. A log-prob of ``-inf`` is a probability of exactly zero and :math:`0 \log 0 = 0`;
a divergence that is infinite in exact arithmetic (the teacher puts mass on a token the
student gives probability zero, for forward KL) is returned as ``+inf``, not clipped.

>>> import torch
>>> from kd_train.losses.divergences import forward_kl, log_probs
>>> t = log_probs(torch.tensor([[2.0, 0.0, -1.0]]))
>>> s = log_probs(torch.tensor([[0.0, 0.0, 0.0]]))
>>> round(float(forward_kl(s, t)), 4)
0.5743
>>> float(forward_kl(t, t))
0.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from kd_train.losses.checks import (
    LossArgumentError,
    check_floating,
    check_positive,
    check_unit_interval,
)

#: The divergence names accepted by :class:`Divergence` and the configuration.
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "skew_forward_kl", "skew_reverse_kl", "tvd")


def log_probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    r"""Log-softmax of ``logits / temperature`` over the last axis, in float32 (or float64).

    :math:`\log \mathrm{softmax}(z / T)_v = z_v / T - \log \sum_u e^{z_u / T}` (logsumexp,
    so logits of ±1e4 are exact).

    >>> import torch
    >>> from kd_train.losses.divergences import log_probs
    >>> log_probs(torch.tensor([1e4, -1e4])).tolist()
    [0.0, -20000.0]
    >>> log_probs(torch.tensor([1.0, 2.0], dtype=torch.bfloat16)).dtype
    torch.float32
    """
    check_floating("logits", logits)
    check_positive("temperature", temperature)
    x = logits if logits.dtype == torch.float64 else logits.float()
    if temperature != 1.0:
        x = x / temperature
    return torch.log_softmax(x, dim=-1)


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    r"""Per position :math:`\sum_v p_v (\log p_v - \log q_v)`, ``0 log 0 = 0``, finite gradients."""
    # The common case (a dense teacher) has no zero mass: no masking, three fewer [.., V]
    # temporaries and no extra pass in the chunked loss's hot path. A zero mass there shows
    # as 0 * inf = NaN in its row, and only then is the masked form below computed.
    fast = torch.linalg.vecdot(logp.exp(), logp - logq)
    if not bool(torch.isnan(fast).any()):
        return fast
    zero = torch.isneginf(logp)
    # The double masking keeps -inf out of the arithmetic, so that no NaN reaches the gradient.
    logp_safe = logp.masked_fill(zero, 0.0)
    logq_safe = logq.masked_fill(zero, 0.0)
    terms = logp_safe.exp() * (logp_safe - logq_safe)
    return terms.masked_fill(zero, 0.0).sum(dim=-1)


def _log_mixture(logp: torch.Tensor, logq: torch.Tensor, weight: float) -> torch.Tensor:
    r""":math:`\log(w\,p + (1-w)\,q)` in log space, for ``0 <= w <= 1``."""
    a = logp + (math.log(weight) if weight > 0.0 else -math.inf)
    b = logq + (math.log1p(-weight) if weight < 1.0 else -math.inf)
    both = torch.isneginf(a) & torch.isneginf(b)
    # logaddexp(-inf, -inf) has a NaN gradient; those entries are zero mass, set afterwards.
    mixed = torch.logaddexp(a.masked_fill(both, 0.0), b.masked_fill(both, 0.0))
    return mixed.masked_fill(both, -math.inf)


def forward_kl(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    r"""Forward KL, :math:`\mathrm{KL}(p \,\|\, q) = \sum_v p_v (\log p_v - \log q_v)`.

    Mode-covering: the student is pushed to put mass wherever the teacher does. The classic
    distillation loss (Hinton et al., 2015).

    Args:
        student_logp: student log-probs ``[..., V]``.
        teacher_logp: teacher log-probs ``[..., V]``.

    Returns:
        ``[...]``, >= 0.
    """
    return _kl(_promote(teacher_logp), _promote(student_logp))


def reverse_kl(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    r"""Reverse KL, :math:`\mathrm{KL}(q \,\|\, p) = \sum_v q_v (\log q_v - \log p_v)`.

    Mode-seeking: the student concentrates on the teacher's main modes (MiniLLM, Gu et al.,
    2024). Returns ``[...]``, >= 0.
    """
    return _kl(_promote(student_logp), _promote(teacher_logp))


def jsd(student_logp: torch.Tensor, teacher_logp: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    r"""Generalized Jensen-Shannon divergence (GKD, Agarwal et al., 2024).

    .. math::

        m = \beta p + (1-\beta) q, \qquad
        \mathrm{JSD}_\beta = \beta\,\mathrm{KL}(p \,\|\, m) + (1-\beta)\,\mathrm{KL}(q \,\|\, m)

    for :math:`0 < \beta < 1`; the endpoints are defined as :math:`\beta = 0`: forward KL and
    :math:`\beta = 1`: reverse KL, exactly (the convention of TRL's GKD trainer and
    Liger-Kernel). The formula itself tends to 0 at both ends, like :math:`\beta\,
    \mathrm{KL}(p\|q)` near 0, so the family is discontinuous there. Bounded by
    :math:`\log 2` in between.

    Raises:
        LossArgumentError: ``beta`` outside ``[0, 1]``.
    """
    check_unit_interval("beta", beta)
    if beta == 0.0:
        return forward_kl(student_logp, teacher_logp)
    if beta == 1.0:
        return reverse_kl(student_logp, teacher_logp)
    logp, logq = _promote(teacher_logp), _promote(student_logp)
    logm = _log_mixture(logp, logq, beta)
    return beta * _kl(logp, logm) + (1.0 - beta) * _kl(logq, logm)


def skew_forward_kl(
    student_logp: torch.Tensor, teacher_logp: torch.Tensor, skew: float = 0.1
) -> torch.Tensor:
    r"""Skew forward KL, :math:`\mathrm{KL}(p \,\|\, \lambda p + (1-\lambda) q)`.

    From DistiLLM (Ko et al., 2024). Mixing a share :math:`\lambda` of the teacher into
    the student keeps the value finite where the student is near zero, which stabilises
    early training. :math:`\lambda = 0` is
    forward KL; :math:`\lambda = 1` is 0.

    Raises:
        LossArgumentError: ``skew`` outside ``[0, 1]``.
    """
    check_unit_interval("skew", skew)
    logp, logq = _promote(teacher_logp), _promote(student_logp)
    return _kl(logp, _log_mixture(logp, logq, skew))


def skew_reverse_kl(
    student_logp: torch.Tensor, teacher_logp: torch.Tensor, skew: float = 0.1
) -> torch.Tensor:
    r"""Skew reverse KL: :math:`\mathrm{KL}(q \,\|\, \lambda q + (1-\lambda) p)`.

    :math:`\lambda = 0` is reverse KL; :math:`\lambda = 1` is 0.

    Raises:
        LossArgumentError: ``skew`` outside ``[0, 1]``.
    """
    return skew_forward_kl(teacher_logp, student_logp, skew)


def tvd(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    r"""Total variation distance, :math:`\tfrac12 \sum_v |p_v - q_v|`, in ``[0, 1]``.

    Bounded and symmetric; its gradient does not grow with the log-ratio, so it is robust
    to a teacher that is confidently wrong, but it gives no signal on tokens both
    distributions put near zero mass on.
    """
    p = _promote(teacher_logp).exp()
    q = _promote(student_logp).exp()
    return 0.5 * (p - q).abs().sum(dim=-1)


def _promote(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


@dataclass(frozen=True)
class Divergence:
    r"""A named divergence with its parameter, callable on ``(student_logp, teacher_logp)``.

    Args:
        name: one of :data:`DIVERGENCES`.
        beta: the JSD mixture weight, in ``[0, 1]`` (used by ``"jsd"``).
        skew: the skew-KL mixture weight :math:`\lambda`, in ``[0, 1]`` (used by the
            ``"skew_*"`` divergences).

    >>> import torch
    >>> from kd_train.losses.divergences import Divergence, log_probs
    >>> d = Divergence("jsd", beta=0.5)
    >>> s, t = log_probs(torch.tensor([0.0, 3.0])), log_probs(torch.tensor([3.0, 0.0]))
    >>> bool(torch.isclose(d(s, t), d(t, s)))
    True
    """

    name: str = "forward_kl"
    beta: float = 0.5
    skew: float = 0.1

    def __post_init__(self) -> None:
        if self.name not in DIVERGENCES:
            raise LossArgumentError(
                f"divergence must be one of {', '.join(DIVERGENCES)}; got {self.name!r}"
            )
        check_unit_interval("beta", self.beta)
        check_unit_interval("skew", self.skew)

    def __call__(self, student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
        """Return the divergence at every position, ``[...]``."""
        if student_logp.shape != teacher_logp.shape:
            raise LossArgumentError(
                f"student_logp has shape {tuple(student_logp.shape)} but teacher_logp has "
                f"shape {tuple(teacher_logp.shape)}; they must match"
            )
        check_floating("student_logp", student_logp)
        check_floating("teacher_logp", teacher_logp)
        return self._function()(student_logp, teacher_logp)

    def _function(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        if self.name == "jsd":
            return lambda s, t: jsd(s, t, self.beta)
        if self.name == "skew_forward_kl":
            return lambda s, t: skew_forward_kl(s, t, self.skew)
        if self.name == "skew_reverse_kl":
            return lambda s, t: skew_reverse_kl(s, t, self.skew)
        simple: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
            "forward_kl": forward_kl,
            "reverse_kl": reverse_kl,
            "tvd": tvd,
        }
        return simple[self.name]
