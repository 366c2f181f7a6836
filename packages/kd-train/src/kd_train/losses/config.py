"""The typed loss configuration, validated at the edge (:meth:`LossConfig.from_dict`).

A config file's ``loss`` table maps onto :class:`LossConfig`, a pydantic model
(:class:`~kd_train.typed_config.ConfigModel`). Every key is checked: an unknown key, a wrong
type, a value out of range or a non-finite number raises
:class:`~kd_train.losses.checks.LossArgumentError` naming the key path (``loss.weights.kd``)
and what is allowed. Building a :class:`LossConfig` directly checks the same.

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
kd_train.losses.checks.LossArgumentError: loss.temprature: unknown key (allowed: beta, ...)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Discriminator, Field, Strict, Tag, ValidationError, model_validator
from pydantic_core import core_schema

from kd_train.losses.checks import LossArgumentError
from kd_train.losses.cross_tokenizer import CROSS_TOKENIZER_METHODS
from kd_train.losses.divergences import DIVERGENCES
from kd_train.losses.hidden import HIDDEN_KINDS
from kd_train.losses.schedule import LinearWarmup, Weight, is_active
from kd_train.losses.sparse import TAIL_POLICIES
from kd_train.losses.terms import SPAN_LOSSES, TERM_NAMES
from kd_train.losses.vocab import VOCAB_POLICIES
from kd_train.typed_config import TAG, Bool, ConfigModel, Int, OneOf, error_lines, validate

NonNegative = Annotated[float, Strict(), Field(ge=0.0)]
Fraction = Annotated[float, Strict(), Field(ge=0.0, le=1.0)]


class WarmupSchedule(ConfigModel):
    """A scheduled weight as written in a config.

    Read as a :class:`~kd_train.losses.schedule.LinearWarmup`:

    ``{start, end, warmup_steps, start_step}``.
    """

    start: NonNegative = Field(default=0.0, description="Weight before ``start_step``.")
    end: NonNegative = Field(default=1.0, description="Weight after the warmup.")
    warmup_steps: Annotated[int, Strict(), Field(ge=0)] = Field(
        default=0, description="Steps from ``start`` to ``end`` (0: a jump at ``start_step``)."
    )
    start_step: Annotated[int, Strict(), Field(ge=0)] = Field(
        default=0, description="Global step where the warmup begins."
    )


class _AsLinearWarmup:
    """Validate a schedule as a :class:`WarmupSchedule` table; hold it as a LinearWarmup."""

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        table = core_schema.no_info_after_validator_function(
            lambda s: LinearWarmup(**s.model_dump()), handler.generate_schema(WarmupSchedule)
        )
        return core_schema.no_info_before_validator_function(
            lambda v: dataclasses.asdict(v) if isinstance(v, LinearWarmup) else v,
            table,
            serialization=core_schema.plain_serializer_function_ser_schema(dataclasses.asdict),
        )


def _weight_kind(value: Any) -> str:
    return f"{TAG}schedule" if isinstance(value, Mapping | LinearWarmup) else f"{TAG}constant"


# A term's weight, a constant >= 0 or a {start, end, warmup_steps, start_step} table.
WeightValue = Annotated[
    Annotated[float, Strict(), Field(ge=0.0), Tag(f"{TAG}constant")]
    | Annotated[LinearWarmup, _AsLinearWarmup(), Tag(f"{TAG}schedule")],
    Discriminator(_weight_kind),
]


class HiddenConfig(ConfigModel):
    """Hidden-state matching: ``(student_layer, teacher_layer)`` pairs and a kind.

    ``kind`` is ``"mse"`` or ``"cosine"`` (:class:`~kd_train.losses.hidden.HiddenStateLoss`).
    """

    layer_map: Annotated[tuple[tuple[Int, Int], ...], Field(min_length=1)] = Field(
        description="``[student_layer, teacher_layer]`` pairs, e.g. ``[[2, 4]]``."
    )
    kind: Annotated[str, OneOf(HIDDEN_KINDS)] = Field(
        default="mse", description="The distance between projected student and teacher states."
    )


class CrossTokenizerConfig(ConfigModel):
    """A teacher with its own tokenizer (:mod:`kd_train.losses.cross_tokenizer`).

    ``method`` is ``"uld"`` (sorted-probability distance, no vocabulary map) or ``"align"``
    (exact KL on the ids both vocabularies share, weighted ``kl_weight``, and ULD on the
    rest, weighted ``uld_weight``). The ``kd`` term then compares the two models group by
    group over the character-aligned text; the other terms read the student alone.
    """

    method: Annotated[str, OneOf(CROSS_TOKENIZER_METHODS)] = "align"
    kl_weight: NonNegative = 1.0
    uld_weight: NonNegative = 1.0


class LossConfig(ConfigModel):
    """Everything the combined loss needs, as plain typed data.

    Keys (each one a field):

    * ``divergence``: one of :data:`~kd_train.losses.divergences.DIVERGENCES`.
    * ``beta``: JSD mixture weight in ``[0, 1]`` (0: forward KL, 1: reverse KL).
    * ``skew``: skew-KL mixture weight in ``[0, 1]``.
    * ``temperature``: softening of both distributions for KD terms (> 0).
    * ``t2_scale``: multiply KD terms by ``temperature ** 2`` (default ``True``, as in
      Hinton et al.; it changes nothing at temperature 1).
    * ``weights``: term name (:data:`~kd_train.losses.terms.TERM_NAMES`) to a constant
      weight or a :class:`~kd_train.losses.schedule.LinearWarmup`. Terms not listed
      are not computed.
    * ``tail``: top-k tail policy, ``"bucket"`` or ``"renormalize"``.
    * ``vocab_policy``: ``"error"`` or ``"truncate"``.
    * ``chunk_size``: positions per chunk on the chunked path.
    * ``ignore_index``: label value of positions that do not count.
    * ``span_loss``: per-token loss of the ``span_*`` terms, ``"ce"`` or ``"kd"``.
    * ``code_pref_margin``: margin of the code-mode preference term (>= 0).
    * ``hidden``: hidden-state matching, or ``None``; needs a ``"hidden"`` weight.
    * ``cross_tokenizer``: a teacher with another tokenizer
      (:class:`CrossTokenizerConfig`), or ``None``: then the vocabularies must match
      (``vocab_policy``).
    """

    divergence: Annotated[str, OneOf(DIVERGENCES)] = "forward_kl"
    beta: Fraction = 0.5
    skew: Fraction = 0.1
    temperature: Annotated[float, Strict(), Field(gt=0.0)] = 1.0
    t2_scale: Bool = True
    weights: dict[Annotated[str, OneOf(TERM_NAMES)], WeightValue] = Field(
        default_factory=lambda: dict[str, Weight](kd=1.0)
    )
    tail: Annotated[str, OneOf(TAIL_POLICIES)] = "bucket"
    vocab_policy: Annotated[str, OneOf(VOCAB_POLICIES)] = "error"
    chunk_size: Annotated[int, Strict(), Field(ge=1)] = 1024
    ignore_index: Int = -100
    span_loss: Annotated[str, OneOf(SPAN_LOSSES)] = "ce"
    code_pref_margin: NonNegative = 1.0
    hidden: HiddenConfig | None = None
    cross_tokenizer: CrossTokenizerConfig | None = None

    def __init__(self, **data: Any) -> None:
        """Validate ``data``; raise :class:`LossArgumentError` naming every bad key path."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise LossArgumentError(
                "\n".join(error_lines(exc, LossConfig, prefix="loss"))
            ) from None

    @model_validator(mode="after")
    def _hidden_has_a_weight(self) -> LossConfig:
        """``loss.hidden`` and ``loss.weights.hidden`` go together."""
        if self.hidden is not None and "hidden" not in self.weights:
            raise LossArgumentError("loss.weights: 'hidden' is configured but has no weight")
        if "hidden" in self.weights and self.hidden is None:
            raise LossArgumentError(
                "loss.hidden: required when loss.weights has 'hidden' "
                "(give layer_map, e.g. [[2, 4]])"
            )
        return self

    @model_validator(mode="after")
    def _cross_tokenizer_fits(self) -> LossConfig:
        """A cross-tokenizer teacher feeds the ``kd`` term alone, token groups not positions."""
        if self.cross_tokenizer is None:
            return self
        if "kd" not in self.active_terms():
            raise LossArgumentError(
                "loss.cross_tokenizer: set but loss.weights has no active 'kd' term; add "
                "kd: 1.0 or remove loss.cross_tokenizer"
            )
        if self.hidden is not None:
            raise LossArgumentError(
                "loss.hidden: not available with loss.cross_tokenizer (the two models' "
                "positions are different tokens); remove one of them"
            )
        spans = [n for n in self.active_terms() if n.startswith("span_")]
        if spans and self.span_loss == "kd":
            raise LossArgumentError(
                "loss.span_loss: 'kd' is per student token, which a teacher with another "
                "tokenizer does not have; use span_loss 'ce' with loss.cross_tokenizer"
            )
        return self

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LossConfig:
        """Build and validate a config from a mapping (a parsed YAML/TOML table).

        ``hidden: null`` is the same as leaving ``hidden`` out; :meth:`to_dict` output reads
        back to an equal config.

        Raises:
            LossArgumentError: naming the key path, the bad value and what is allowed.
        """
        return validate(cls, data, LossArgumentError, prefix="loss")

    def to_dict(self) -> dict[str, Any]:
        """Return the config as JSON-ready plain data (:meth:`from_dict` reads it back).

        ``cross_tokenizer`` is left out while unset (the form stored before it existed).
        """
        data = self.model_dump(mode="json")
        if data["cross_tokenizer"] is None:
            del data["cross_tokenizer"]
        return data

    def active_terms(self) -> frozenset[str]:
        """The terms whose weight is not constantly zero."""
        return frozenset(name for name, w in self.weights.items() if is_active(w))
