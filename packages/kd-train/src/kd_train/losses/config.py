"""The typed loss configuration, validated at the edge (:meth:`LossConfig.from_dict`).

A config file's ``loss`` table maps onto :class:`LossConfig`. Every key is checked: an
unknown key, a wrong type or a value out of range raises
:class:`~kd_train.losses.checks.LossArgumentError` naming the key path (``loss.weights.kd``)
and what is allowed.

>>> from kd_train.losses.config import LossConfig
>>> cfg = LossConfig.from_dict({
...     "divergence": "jsd", "beta": 0.5, "temperature": 2.0,
...     "weights": {"kd": 1.0, "ce": {"start": 0.0, "end": 0.5, "warmup_steps": 100}},
... })
>>> cfg.weights["ce"].end
0.5
>>> LossConfig.from_dict({"temprature": 2.0})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
kd_train.losses.checks.LossArgumentError: loss.temprature: unknown key; allowed keys: ...
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from kd_train.losses.checks import LossArgumentError
from kd_train.losses.divergences import DIVERGENCES
from kd_train.losses.hidden import HIDDEN_KINDS
from kd_train.losses.schedule import LinearWarmup, Weight
from kd_train.losses.sparse import TAIL_POLICIES
from kd_train.losses.terms import SPAN_LOSSES, TERM_NAMES
from kd_train.losses.vocab import VOCAB_POLICIES


@dataclass(frozen=True)
class HiddenConfig:
    """Hidden-state matching: ``(student_layer, teacher_layer)`` pairs and a kind.

    ``kind`` is ``"mse"`` or ``"cosine"`` (:class:`~kd_train.losses.hidden.HiddenStateLoss`).
    """

    layer_map: tuple[tuple[int, int], ...]
    kind: str = "mse"


@dataclass(frozen=True)
class LossConfig:
    """Everything the combined loss needs, as plain typed data.

    Attributes:
        divergence: one of :data:`~kd_train.losses.divergences.DIVERGENCES`.
        beta: JSD mixture weight in ``[0, 1]`` (0: forward KL, 1: reverse KL).
        skew: skew-KL mixture weight in ``[0, 1]``.
        temperature: softening of both distributions for KD terms (> 0).
        t2_scale: multiply KD terms by ``temperature ** 2`` (default ``True``, as in
            Hinton et al.; it changes nothing at temperature 1).
        weights: term name (:data:`~kd_train.losses.terms.TERM_NAMES`) to a constant
            weight or a :class:`~kd_train.losses.schedule.LinearWarmup`. Terms not listed
            are not computed.
        tail: top-k tail policy, ``"bucket"`` or ``"renormalize"``.
        vocab_policy: ``"error"`` or ``"truncate"``.
        chunk_size: positions per chunk on the chunked path.
        ignore_index: label value of positions that do not count.
        span_loss: per-token loss of the ``span_*`` terms, ``"ce"`` or ``"kd"``.
        code_pref_margin: margin of the code-mode preference term (>= 0).
        hidden: hidden-state matching, or ``None``; needs a ``"hidden"`` weight.
    """

    divergence: str = "forward_kl"
    beta: float = 0.5
    skew: float = 0.1
    temperature: float = 1.0
    t2_scale: bool = True
    weights: Mapping[str, Weight] = field(default_factory=lambda: {"kd": 1.0})
    tail: str = "bucket"
    vocab_policy: str = "error"
    chunk_size: int = 1024
    ignore_index: int = -100
    span_loss: str = "ce"
    code_pref_margin: float = 1.0
    hidden: HiddenConfig | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str = "loss") -> LossConfig:
        """Build and validate a config from a mapping (a parsed YAML/TOML table).

        Raises:
            LossArgumentError: naming the key path, the bad value and what is allowed.
        """
        _check_keys(data, {f.name for f in fields(cls)}, path)
        out: dict[str, Any] = {}
        for key, value in data.items():
            where = f"{path}.{key}"
            if key in ("divergence", "tail", "vocab_policy", "span_loss"):
                allowed = {
                    "divergence": DIVERGENCES,
                    "tail": TAIL_POLICIES,
                    "vocab_policy": VOCAB_POLICIES,
                    "span_loss": SPAN_LOSSES,
                }[key]
                out[key] = _choice(value, allowed, where)
            elif key in ("beta", "skew"):
                out[key] = _number(value, where, lo=0.0, hi=1.0)
            elif key == "temperature":
                out[key] = _number(value, where, lo=0.0, lo_open=True)
            elif key == "code_pref_margin":
                out[key] = _number(value, where, lo=0.0)
            elif key == "t2_scale":
                if not isinstance(value, bool):
                    raise LossArgumentError(f"{where}: must be true or false, got {value!r}")
                out[key] = value
            elif key in ("chunk_size", "ignore_index"):
                out[key] = _integer(value, where, lo=1 if key == "chunk_size" else None)
            elif key == "weights":
                out[key] = _weights(value, where)
            else:
                out[key] = _hidden(value, where)
        config = cls(**out)
        if config.hidden is not None and "hidden" not in config.weights:
            raise LossArgumentError(f"{path}.weights: 'hidden' is configured but has no weight")
        if "hidden" in config.weights and config.hidden is None:
            raise LossArgumentError(
                f"{path}.hidden: required when {path}.weights has 'hidden' "
                "(give layer_map, e.g. [[2, 4]])"
            )
        return config


def _check_keys(data: Any, allowed: set[str], path: str) -> None:
    if not isinstance(data, Mapping):
        raise LossArgumentError(f"{path}: must be a table/mapping, got {type(data).__name__}")
    for key in data:
        if key not in allowed:
            raise LossArgumentError(
                f"{path}.{key}: unknown key; allowed keys: {', '.join(sorted(allowed))}"
            )


def _choice(value: Any, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise LossArgumentError(f"{where}: must be one of {', '.join(allowed)}; got {value!r}")
    return str(value)


def _number(
    value: Any, where: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LossArgumentError(f"{where}: must be a number, got {value!r}")
    x = float(value)
    too_low = lo is not None and (x <= lo if lo_open else x < lo)
    too_high = hi is not None and x > hi
    if too_low or too_high or x != x:
        low = "" if lo is None else f"{'>' if lo_open else '>='} {lo}"
        high = "" if hi is None else f"<= {hi}"
        raise LossArgumentError(
            f"{where}: must be {' and '.join(s for s in (low, high) if s)}, got {value!r}"
        )
    return x


def _integer(value: Any, where: str, lo: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LossArgumentError(f"{where}: must be an integer, got {value!r}")
    if lo is not None and value < lo:
        raise LossArgumentError(f"{where}: must be >= {lo}, got {value!r}")
    return value


def _weights(value: Any, where: str) -> dict[str, Weight]:
    _check_keys(value, set(TERM_NAMES), where)
    out: dict[str, Weight] = {}
    for name, weight in value.items():
        at = f"{where}.{name}"
        if isinstance(weight, Mapping):
            _check_keys(weight, {"start", "end", "warmup_steps", "start_step"}, at)
            out[name] = LinearWarmup(
                start=_number(weight.get("start", 0.0), f"{at}.start", lo=0.0),
                end=_number(weight.get("end", 1.0), f"{at}.end", lo=0.0),
                warmup_steps=_integer(weight.get("warmup_steps", 0), f"{at}.warmup_steps", lo=0),
                start_step=_integer(weight.get("start_step", 0), f"{at}.start_step", lo=0),
            )
        else:
            out[name] = _number(weight, at, lo=0.0)
    return out


def _hidden(value: Any, where: str) -> HiddenConfig:
    _check_keys(value, {"layer_map", "kind"}, where)
    pairs = value.get("layer_map")
    if not isinstance(pairs, list | tuple) or not pairs:
        raise LossArgumentError(
            f"{where}.layer_map: must be a non-empty list of [student_layer, teacher_layer] "
            f"pairs, got {pairs!r}"
        )
    layer_map = []
    for i, pair in enumerate(pairs):
        ok = isinstance(pair, list | tuple) and len(pair) == 2
        if not ok or any(isinstance(x, bool) or not isinstance(x, int) for x in pair):
            raise LossArgumentError(
                f"{where}.layer_map[{i}]: must be a pair of integers, got {pair!r}"
            )
        layer_map.append((int(pair[0]), int(pair[1])))
    kind = _choice(value.get("kind", "mse"), HIDDEN_KINDS, f"{where}.kind")
    return HiddenConfig(layer_map=tuple(layer_map), kind=kind)
