r"""Measure the bias of top-k KD against dense KD, per rule for softening the tail bucket.

A top-k teacher gives its ``k`` largest log-probs and the log of the rest of its mass,
:math:`m`. At temperature :math:`T` the teacher's softened tail is
:math:`\sum_{v \notin \text{top-}k} p_v^{1/T}` (before normalising), which the top-k cannot
know. Rules compared (:math:`n = V - k` ids outside the top-k):

``k+1``
    The tail as one token, :math:`m^{1/T}` (the rule before the ``uniform`` one; a lower
    bound of the true softened tail).
``uniform``
    :math:`m` spread evenly over the :math:`n` ids, :math:`n^{1 - 1/T} m^{1/T}` (an upper
    bound); what :func:`kd_train.losses.sparse.bucket_log_probs` does.
``oracle``
    The exact softened tail from the dense teacher: what no top-k source has. Its error is
    the part of dense KD that any ``k + 1`` bucketing loses (the KL inside the tail).

For each teacher, ``rows`` positions of ``V`` ids, seed fixed: ``gauss s`` has logits
``randn * s``; ``zipf`` has logits :math:`-1.1 \log r` for a random rank :math:`r` plus
``0.3 * randn``. The student's logits are ``0.8 * teacher + 0.6 * s * randn`` (``s = 1``
for ``zipf``). KD is forward KL between the softened distributions, without the
:math:`T^2` factor, in float64; the teacher's tail is stored exactly. Printed per cell:
mean over rows of :math:`|KD_{top\text{-}k} - KD_{dense}|`, and in brackets that error
divided by the mean dense KD.

Usage: ``python packages/kd-train/benchmarks/topk_tail_bias.py [--rows 512] [--vocab 4096]
[--seed 0]`` (about 20 s on two CPU cores); prints a Markdown table.
"""

from __future__ import annotations

import argparse
import math

import torch
from kd_train.losses.divergences import forward_kl, log_probs
from kd_train.losses.sparse import bucket_log_probs, safe_logsumexp

KS = (4, 8, 16, 32, 64, 256)
TEMPERATURES = (1.0, 2.0, 4.0)
RULES = ("k+1", "uniform", "oracle")


def teachers(rows: int, vocab: int, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Return ``{name: (teacher logits, student logits)}``, each ``[rows, vocab]`` float64."""
    g = torch.Generator().manual_seed(seed)

    def noise() -> torch.Tensor:
        return torch.randn(rows, vocab, dtype=torch.float64, generator=g)

    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for scale in (1.0, 2.0, 4.0):
        zt = noise() * scale
        out[f"gauss {scale:g}"] = (zt, 0.8 * zt + 0.6 * scale * noise())
    rank = torch.argsort(torch.rand(rows, vocab, generator=g), dim=-1).double() + 1.0
    zt = -1.1 * torch.log(rank) + 0.3 * noise()
    out["zipf"] = (zt, 0.8 * zt + 0.6 * noise())
    return out


def top_and_tail(zt: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return the teacher's top-k ``(ids, log-probs)`` at T = 1 and its exact log tail."""
    top, ids = log_probs(zt).topk(k, dim=-1)
    tail = torch.log(-torch.expm1(torch.logsumexp(top, dim=-1)))
    return ids, top, tail


def rule_buckets(rule: str, zt: torch.Tensor, zs: torch.Tensor, k: int, t: float) -> torch.Tensor:
    """Return the teacher's softened bucket log-probs ``[rows, k + 1]`` under ``rule``."""
    ids, top, tail = top_and_tail(zt, k)
    if rule == "uniform":
        _, t_b = bucket_log_probs(log_probs(zs, t), ids, top, teacher_tail=tail, temperature=t)
        return t_b
    if rule == "k+1":
        return torch.log_softmax(torch.cat([top, tail[:, None]], dim=-1) / t, dim=-1)
    soft = log_probs(zt, t)
    exact = safe_logsumexp(soft.scatter(-1, ids, -math.inf))
    return torch.cat([soft.gather(-1, ids), exact[:, None]], dim=-1)


def errors(zt: torch.Tensor, zs: torch.Tensor, rule: str, t: float) -> list[tuple[float, float]]:
    """Return ``(mean |KD_topk - KD_dense|, that / mean KD_dense)`` for each k in :data:`KS`."""
    s_dense = log_probs(zs, t)
    dense = forward_kl(s_dense, log_probs(zt, t))
    out = []
    for k in KS:
        ids, top, tail = top_and_tail(zt, k)
        s_b, _ = bucket_log_probs(s_dense, ids, top, teacher_tail=tail, temperature=t)
        err = (forward_kl(s_b, rule_buckets(rule, zt, zs, k, t)) - dense).abs().mean()
        out.append((float(err), float(err / dense.mean())))
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the Markdown table of top-k KD errors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"rows {args.rows}, V {args.vocab}, seed {args.seed}; mean |KD_topk - KD_dense| (rel.)")
    print()
    print("| teacher | rule | T | " + " | ".join(f"k={k}" for k in KS) + " |")
    print("|---" * (3 + len(KS)) + "|")
    for name, (zt, zs) in teachers(args.rows, args.vocab, args.seed).items():
        for t in TEMPERATURES:
            for rule in RULES:
                cells = " | ".join(f"{e:.4f} ({r:.2f})" for e, r in errors(zt, zs, rule, t))
                print(f"| {name} | {rule} | {t:g} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
