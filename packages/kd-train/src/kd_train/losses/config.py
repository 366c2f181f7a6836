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
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from kd_train.losses.checks import LossArgumentError
from kd_train.losses.divergences import DIVERGENCES
from kd_train.losses.hidden import HIDDEN_KINDS
from kd_train.losses.schedule import LinearWarmup, Weight, is_active
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

    def __post_init__(self) -> None:
        """Validate every field; building a config directly checks what :meth:`from_dict` does."""
        for key, allowed in (
            ("divergence", DIVERGENCES),
            ("tail", TAIL_POLICIES),
            ("vocab_policy", VOCAB_POLICIES),
            ("span_loss", SPAN_LOSSES),
        ):
            _choice(getattr(self, key), allowed, f"loss.{key}")
        _number(self.beta, "loss.beta", lo=0.0, hi=1.0)
        _number(self.skew, "loss.skew", lo=0.0, hi=1.0)
        _number(self.temperature, "loss.temperature", lo=0.0, lo_open=True)
        _number(self.code_pref_margin, "loss.code_pref_margin", lo=0.0)
        if not isinstance(self.t2_scale, bool):
            raise LossArgumentError(f"loss.t2_scale: must be true or false, got {self.t2_scale!r}")
        _integer(self.chunk_size, "loss.chunk_size", lo=1)
        _integer(self.ignore_index, "loss.ignore_index")
        _weights(self.weights, "loss.weights")
        if self.hidden is not None:
            if not isinstance(self.hidden, HiddenConfig):
                raise LossArgumentError(
                    f"loss.hidden: must be a HiddenConfig, got {type(self.hidden).__name__}"
                )
            _hidden_pairs(self.hidden.layer_map, "loss.hidden.layer_map")
            _choice(self.hidden.kind, HIDDEN_KINDS, "loss.hidden.kind")
            if "hidden" not in self.weights:
                raise LossArgumentError("loss.weights: 'hidden' is configured but has no weight")
        if "hidden" in self.weights and self.hidden is None:
            raise LossArgumentError(
                "loss.hidden: required when loss.weights has 'hidden' "
                "(give layer_map, e.g. [[2, 4]])"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LossConfig:
        """Build and validate a config from a mapping (a parsed YAML/TOML table).

        ``hidden: null`` is the same as leaving ``hidden`` out; :meth:`to_dict` output reads
        back to an equal config.

        Raises:
            LossArgumentError: naming the key path, the bad value and what is allowed.
        """
        _check_keys(data, {f.name for f in fields(cls)}, "loss")
        out = dict(data)
        if "weights" in out:
            out["weights"] = _parse_weights(out["weights"], "loss.weights")
        if out.get("hidden") is not None:
            hidden = out["hidden"]
            _check_keys(hidden, {"layer_map", "kind"}, "loss.hidden")
            pairs = _hidden_pairs(hidden.get("layer_map"), "loss.hidden.layer_map")
            out["hidden"] = HiddenConfig(layer_map=pairs, kind=hidden.get("kind", "mse"))
        return cls(**out)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as JSON-ready plain data (:meth:`from_dict` reads it back)."""
        data = asdict(self)
        data["weights"] = {
            name: asdict(w) if isinstance(w, LinearWarmup) else w
            for name, w in self.weights.items()
        }
        if self.hidden is not None:
            data["hidden"] = {
                "layer_map": [list(pair) for pair in self.hidden.layer_map],
                "kind": self.hidden.kind,
            }
        return data

    def active_terms(self) -> frozenset[str]:
        """The terms whose weight is not constantly zero."""
        return frozenset(name for name, w in self.weights.items() if is_active(w))


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


def _parse_weights(value: Any, where: str) -> dict[str, Weight]:
    """Turn a weights table's schedule mappings into :class:`LinearWarmup` (keys checked)."""
    _check_keys(value, set(TERM_NAMES), where)
    out: dict[str, Weight] = {}
    for name, weight in value.items():
        at = f"{where}.{name}"
        if isinstance(weight, Mapping):
            _check_keys(weight, {"start", "end", "warmup_steps", "start_step"}, at)
            for key, default in (("start", 0.0), ("end", 1.0)):
                _number(weight.get(key, default), f"{at}.{key}", lo=0.0)
            for key in ("warmup_steps", "start_step"):
                _integer(weight.get(key, 0), f"{at}.{key}", lo=0)
            out[name] = LinearWarmup(**weight)
        else:
            out[name] = weight
    return out


def _weights(value: Any, where: str) -> None:
    """Check a weights mapping of constants and :class:`LinearWarmup` schedules."""
    _check_keys(value, set(TERM_NAMES), where)
    for name, weight in value.items():
        at = f"{where}.{name}"
        if isinstance(weight, LinearWarmup):
            _number(weight.start, f"{at}.start", lo=0.0)
            _number(weight.end, f"{at}.end", lo=0.0)
            _integer(weight.warmup_steps, f"{at}.warmup_steps", lo=0)
            _integer(weight.start_step, f"{at}.start_step", lo=0)
        else:
            _number(weight, at, lo=0.0)


def _hidden_pairs(pairs: Any, where: str) -> tuple[tuple[int, int], ...]:
    if not isinstance(pairs, list | tuple) or not pairs:
        raise LossArgumentError(
            f"{where}: must be a non-empty list of [student_layer, teacher_layer] "
            f"pairs, got {pairs!r}"
        )
    layer_map = []
    for i, pair in enumerate(pairs):
        ok = isinstance(pair, list | tuple) and len(pair) == 2
        if not ok or any(isinstance(x, bool) or not isinstance(x, int) for x in pair):
            raise LossArgumentError(f"{where}[{i}]: must be a pair of integers, got {pair!r}")
        layer_map.append((int(pair[0]), int(pair[1])))
    return tuple(layer_map)
