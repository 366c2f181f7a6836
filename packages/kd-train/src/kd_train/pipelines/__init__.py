"""Runnable demo pipelines: ``python -m kd_train.pipelines all --out DIR``.

``toy`` (tool calls with spans), ``8-ball`` (a Magic 8-Ball classifier) and ``smollm2``
(the real SmolLM2-135M-Instruct teacher, slow, not part of ``all``). ``all`` runs the toy
pipelines, a couple of minutes on a CPU; ``nox -s pipeline`` runs exactly that.
"""

from kd_train.pipelines.common import mean_forward_kl

__all__ = ["mean_forward_kl"]
