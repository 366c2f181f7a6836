r"""Hidden-state matching through learned linear projections (FitNets, TinyBERT style).

For each user-given pair ``(i, j)`` of (student layer, teacher layer), a learned linear map
:math:`W_{ij}` (student width to teacher width) projects the student state, which is
compared with the teacher state at every position that counts:

.. math::

    \ell_t^{\mathrm{mse}} = \frac{1}{d_t} \lVert W h^s_{i,t} - h^t_{j,t} \rVert_2^2, \qquad
    \ell_t^{\mathrm{cos}} = 1 - \cos(W h^s_{i,t},\, h^t_{j,t})

averaged over the pairs, summed over positions and divided by the same denominator as the
other terms (:mod:`kd_train.losses.masking`). The projections are parameters of this
module: give them to the optimiser (they are in the combined loss's ``parameters()``).
Layer indices index the tuples ``output_hidden_states=True`` returns (0 = embeddings).

>>> import torch
>>> from kd_train.losses.hidden import HiddenStateLoss
>>> loss = HiddenStateLoss(8, 16, [(1, 2)], kind="cosine")
>>> s = [torch.randn(2, 3, 8) for _ in range(2)]
>>> t = [torch.randn(2, 3, 16) for _ in range(3)]
>>> mask = torch.ones(2, 3, dtype=torch.bool)
>>> value = loss(s, t, mask, torch.tensor(6.0))
>>> bool(0.0 <= float(value.detach()) <= 2.0)
True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kd_train.losses.checks import LossArgumentError, check_floating

#: The accepted values of ``kind``.
HIDDEN_KINDS = ("mse", "cosine")


class HiddenStateLoss(nn.Module):
    """Match student hidden states to the teacher's through learned projections.

    Args:
        student_dim: the student's hidden size.
        teacher_dim: the teacher's hidden size.
        layer_map: ``(student_layer, teacher_layer)`` pairs, at least one.
        kind: ``"mse"`` or ``"cosine"``.
    """

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        layer_map: Sequence[tuple[int, int]],
        kind: str = "mse",
    ) -> None:
        super().__init__()
        if kind not in HIDDEN_KINDS:
            raise LossArgumentError(
                f"hidden kind must be one of {', '.join(HIDDEN_KINDS)}; got {kind!r}"
            )
        if not layer_map:
            raise LossArgumentError("layer_map must hold at least one (student, teacher) pair")
        self.kind = kind
        self.layer_map = [(int(i), int(j)) for i, j in layer_map]
        self.projections = nn.ModuleList(
            nn.Linear(student_dim, teacher_dim, bias=False) for _ in self.layer_map
        )

    def forward(
        self,
        student_hidden_states: Sequence[torch.Tensor],
        teacher_hidden_states: Sequence[torch.Tensor],
        mask: torch.Tensor,
        denominator: torch.Tensor,
    ) -> torch.Tensor:
        """Return the loss (a scalar).

        Args:
            student_hidden_states: per layer, ``[B, T, student_dim]``.
            teacher_hidden_states: per layer, ``[B, T, teacher_dim]`` (no gradient needed).
            mask: bool ``[B, T]``, the positions that count.
            denominator: what the summed loss is divided by.
        """
        rows = mask.reshape(-1)
        total = torch.zeros((), device=mask.device)
        for (i, j), proj in zip(self.layer_map, self.projections, strict=True):
            hs = self._layer("student", student_hidden_states, i)
            ht = self._layer("teacher", teacher_hidden_states, j)
            weight: torch.Tensor = proj.weight  # type: ignore[assignment]
            s = proj(hs.reshape(-1, hs.shape[-1])[rows].to(weight.dtype)).float()
            t = ht.reshape(-1, ht.shape[-1])[rows].float()
            if s.shape != t.shape:
                raise LossArgumentError(
                    f"hidden states of student layer {i} project to {tuple(s.shape)} but "
                    f"teacher layer {j} has {tuple(t.shape)} at the positions that count; "
                    "check teacher_dim and that both models saw the same tokens"
                )
            if self.kind == "mse":
                per_row = (s - t).pow(2).mean(dim=-1)
            else:
                per_row = 1.0 - nn.functional.cosine_similarity(s, t, dim=-1, eps=1e-8)
            total = total + per_row.sum()
        return total / (len(self.layer_map) * denominator)

    @staticmethod
    def _layer(side: str, states: Sequence[torch.Tensor], index: int) -> torch.Tensor:
        if not -len(states) <= index < len(states):
            raise LossArgumentError(
                f"layer_map asks for {side} layer {index} but the {side} returned "
                f"{len(states)} hidden states; pick indices below {len(states)}"
            )
        check_floating(f"{side}_hidden_states[{index}]", states[index])
        return states[index]
