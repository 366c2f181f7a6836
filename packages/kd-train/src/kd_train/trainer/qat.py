"""Quantization-aware distillation: torchao fake quantization of the student's linear layers.

From ``qat.start_step`` on, every ``nn.Linear`` of the student but its output head is
swapped for torchao's ``FakeQuantizedLinear`` (``quantize_(model, QATConfig(...,
step="prepare"))``). The swap keeps the very ``weight`` and ``bias`` parameters, so the
optimiser state stays attached to them and the state dict keeps its names: a checkpoint
written before the switch loads into the model after it and the other way round.

The fake quantizers are observers without state: each forward computes the scales from the
tensor it quantizes (:func:`weight_qparams` gives the weights' ones). For a weight row (int8)
or a group of ``g`` weights of a row (int4), symmetric, ``b`` bits, ``q ∈ [-2^(b-1),
2^(b-1)-1]``::

    s = max(|w|) / ((q_max - q_min) / 2)        127.5 for int8, 7.5 for int4
    w_hat = clamp(round(w / s), q_min, q_max) · s

and for the activations of one token (int8 only, asymmetric)::

    s = (max(x, 0) - min(x, 0)) / 255,   z = clamp(-128 - round(min(x, 0) / s), -128, 127)
    x_hat = (clamp(round(x / s) + z, -128, 127) - z) · s

Rounding passes the gradient straight through (``d round(u)/du := 1``) and the clamp passes
none outside its range, so ``d w_hat / d w = 1`` where ``round(w / s)`` is inside
``[q_min, q_max]``. The scale is a function of the tensor too: the one element each scale
is computed from (the largest ``|w|`` of a group; a token's min and max) also gets the
gradient through ``s``.

The saved student holds the float ("latent") weights, which any loader reads as a plain
model, and :data:`QUANTIZATION_FILE` next to them records the scheme and the layers:
kd-convert exports the integer weights and scales from them (:func:`weight_qparams`), and
:func:`load_fake_quantized` rebuilds the exact fake-quant model the run ended with.

Post-training quantization (PTQ) is the same record applied to a float student that was never
trained through rounding (:func:`post_training_quantize`, ``kd-train quantize``): the same
observers give its integer weights and scales, so it exports and evaluates as a QAT student
does. The record's ``origin`` says which of the two a directory holds.

torchao is imported only here, when QAT is used (``pip install kd-train[qat]``).
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import torch
from pydantic import Field, model_validator
from torch import nn
from transformers import AutoModelForCausalLM

from kd_train.atomic import atomic_dir, atomic_write_text
from kd_train.errors import KDTrainError
from kd_train.trainer.train_config import QAT_GROUP_SIZES, QAT_SCHEMES, QATConfig
from kd_train.typed_config import ConfigModel, Int, InvalidConfigError, OneOf, Str, validate

#: The file a QAT student directory holds besides the ``transformers`` ones.
QUANTIZATION_FILE = "quantization.json"
#: The format tag of :data:`QUANTIZATION_FILE`.
QUANTIZATION_FORMAT = "kd-quantization/1"
#: Where a record's quantization comes from, trained through (QAT) or applied after (PTQ).
QUANTIZATION_ORIGINS = ("qat", "ptq")
#: ``(q_min, q_max)`` of each weight width.
_BOUNDS = {"int8": (-128, 127), "int4": (-8, 7)}


class QATUnavailableError(KDTrainError):
    """torchao is not installed; the message says which extra brings it."""


class QuantizationRecordError(KDTrainError):
    """A :data:`QUANTIZATION_FILE` is malformed or does not fit the model; names file and field."""


class QuantizationRecord(ConfigModel):
    """What :data:`QUANTIZATION_FILE` holds: how the student's linear layers are quantized."""

    format: Annotated[str, OneOf((QUANTIZATION_FORMAT,))] = Field(
        description=f"Always {QUANTIZATION_FORMAT!r}."
    )
    scheme: Annotated[str, OneOf(QAT_SCHEMES)] = Field(
        description="``int8`` or ``int4`` (see :class:`~kd_train.trainer.train_config.QATConfig`)."
    )
    group_size: Int | None = Field(default=None, description="int4 weights per scale.")
    layers: list[Str] = Field(description="The fake-quantized linear layers, by module name.")
    origin: Annotated[str, OneOf(QUANTIZATION_ORIGINS)] = Field(
        default="qat",
        description="``qat`` (a QAT run saved it; records written before this field say "
        "nothing and are QAT) or ``ptq`` (``kd-train quantize`` applied it to a float student).",
    )

    @model_validator(mode="after")
    def _group_size_fits_scheme(self) -> QuantizationRecord:
        """int4 names its group size (one of :data:`QAT_GROUP_SIZES`); int8 names none."""
        allowed: tuple[int | None, ...] = QAT_GROUP_SIZES if self.scheme == "int4" else (None,)
        if self.group_size not in allowed:
            raise InvalidConfigError(
                f"group_size: {self.group_size} does not fit scheme {self.scheme!r} "
                f"(allowed: {', '.join(map(str, allowed))})"
            )
        return self

    def qat_config(self) -> QATConfig:
        """The :class:`~kd_train.trainer.train_config.QATConfig` of this record."""
        return QATConfig(scheme=self.scheme, group_size=self.group_size)


def torchao() -> ModuleType:
    """Import ``torchao.quantization`` or say how to install it.

    Raises:
        QATUnavailableError: torchao is not installed.
    """
    try:
        return importlib.import_module("torchao.quantization")
    except ImportError as exc:
        raise QATUnavailableError(
            f"qat: needs torchao, which cannot be imported ({exc}); install it with "
            "'pip install kd-train[qat]'"
        ) from None


def quantizable_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """The linear layers QAT quantizes: every ``nn.Linear`` but the output head, by name.

    The head stays float: it is tied to the input embeddings in most small students, and the
    chunked loss reads its weight directly (:mod:`kd_train.trainer.forward`).
    """
    head = _output_head(model)
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module is not head
    }


def prepare_qat(model: nn.Module, config: QATConfig) -> list[str]:
    """Swap the student's linear layers for fake-quantized ones, in place; return their names.

    Raises:
        InvalidConfigError: an int4 group size does not divide a layer's input width.
        QATUnavailableError: torchao is not installed.
    """
    layers = quantizable_layers(model)
    group = config.weight_group_size
    if group is not None:
        odd = [f"{n} ({m.in_features})" for n, m in layers.items() if m.in_features % group]
        if odd:
            raise InvalidConfigError(
                f"qat.group_size: {group} does not divide the input width of {', '.join(odd[:3])}; "
                f"choose a group size among {QAT_GROUP_SIZES} that divides every layer's width"
            )
    ao = torchao()
    qat = importlib.import_module("torchao.quantization.qat")
    activations, weights = _fake_quantize_configs(qat, config)
    chosen = set(layers.values())
    ao.quantize_(
        model,
        qat.QATConfig(activation_config=activations, weight_config=weights, step="prepare"),
        filter_fn=lambda module, _name: module in chosen,
    )
    return sorted(layers)


def _fake_quantize_configs(qat: ModuleType, config: QATConfig) -> tuple[Any, Any]:
    """The ``(activation, weight)`` torchao fake-quantize configs of ``config.scheme``."""
    if config.scheme == "int8":
        activations = qat.IntxFakeQuantizeConfig(torch.int8, "per_token", is_symmetric=False)
        weights = qat.IntxFakeQuantizeConfig(torch.int8, "per_channel", is_symmetric=True)
        return activations, weights
    int4 = vars(torch)["int4"]  # torch's type stubs do not list the sub-byte dtypes
    weights = qat.IntxFakeQuantizeConfig(
        int4, group_size=config.weight_group_size, is_symmetric=True
    )
    return None, weights


def is_fake_quantized(model: nn.Module) -> bool:
    """Whether ``model`` holds a fake-quantized layer (QAT has been switched on)."""
    return any(hasattr(m, "weight_fake_quantizer") for m in model.modules())


def switch_at_step(model: nn.Module, config: QATConfig | None, step: int, on: bool) -> bool:
    """Turn QAT on at the step boundary when due; return whether it is on for ``step``.

    ``on`` is what the run's state says (a checkpoint written after the switch says so);
    QAT is due from ``config.start_step`` on. Called before every optimiser step: on a
    resumed run it switches the freshly loaded student on before its first step.

    Raises:
        QuantizationRecordError: the state says QAT is on but the config has no ``qat``.
    """
    if config is None:
        if on:
            raise QuantizationRecordError(
                "the checkpoint was written with QAT on, and the config has no qat section; "
                "resume with the run's own config"
            )
        return False
    due = on or step >= config.start_step
    if due and not is_fake_quantized(model):
        prepare_qat(model, config)
    return due


def weight_qparams(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The integer weights and the scales a fake-quantized layer computes with.

    Returns ``(q, scale)``: ``q`` int8 of the weight's shape (values in the scheme's range),
    ``scale`` float32 ``[out_features, in_features / group]`` (one column for per-channel
    int8), taken from torchao's own observer, so that ``q · scale`` (each scale repeated over
    its group) equals the layer's fake-quantized weight exactly.
    """
    quantizer = getattr(layer, "weight_fake_quantizer", None)
    weight = getattr(layer, "weight", None)
    if quantizer is None or not isinstance(weight, torch.Tensor):
        raise QuantizationRecordError(f"{type(layer).__name__} is not a fake-quantized layer")
    with torch.no_grad():
        quantizer(weight)  # the observer computes the scales of this weight
        scale = quantizer.scale.detach().to(torch.float32).reshape(weight.shape[0], -1)
        q_min, q_max = _BOUNDS["int8" if quantizer.config.dtype == torch.int8 else "int4"]
        per_weight = scale.repeat_interleave(weight.shape[1] // scale.shape[1], dim=1)
        q = torch.clamp(torch.round(weight * (1.0 / per_weight)), q_min, q_max)
    return q.to(torch.int8), scale


def quantization_record(model: nn.Module, config: QATConfig, origin: str = "qat") -> dict[str, Any]:
    """The content of :data:`QUANTIZATION_FILE` for a fake-quantized ``model``.

    ``origin`` is one of :data:`QUANTIZATION_ORIGINS`.
    """
    layers = sorted(n for n, m in model.named_modules() if hasattr(m, "weight_fake_quantizer"))
    return {
        "format": QUANTIZATION_FORMAT,
        "scheme": config.scheme,
        "group_size": config.weight_group_size,
        "layers": layers,
        "origin": origin,
    }


def saved_record(model: nn.Module, config: QATConfig | None, on: bool) -> dict[str, Any] | None:
    """The record to save with the final student: ``None`` unless QAT was on when it ended."""
    if config is None or not on:
        return None
    return quantization_record(model, config)


def write_quantization(model_dir: Path, record: dict[str, Any]) -> None:
    """Write ``record`` as ``model_dir/quantization.json`` (atomically)."""
    atomic_write_text(Path(model_dir) / QUANTIZATION_FILE, json.dumps(record, indent=2) + "\n")


def read_quantization(model_dir: str | Path) -> QuantizationRecord | None:
    """The quantization record of a saved student, or ``None`` for a float student.

    Raises:
        QuantizationRecordError: the file is not JSON or a field is wrong (named).
    """
    path = Path(model_dir) / QUANTIZATION_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise QuantizationRecordError(f"{path}: not a readable JSON file ({exc})") from None
    record: QuantizationRecord = validate(
        QuantizationRecord, data, QuantizationRecordError, str(path)
    )
    return record


def apply_record(model: nn.Module, record: QuantizationRecord, source: str = "") -> None:
    """Fake-quantize ``model`` as ``record`` says, checking it names the model's layers.

    Raises:
        QuantizationRecordError: the record's layers are not the model's quantizable ones.
    """
    expected = sorted(quantizable_layers(model))
    if sorted(record.layers) != expected:
        missing = sorted(set(expected) - set(record.layers))[:3]
        extra = sorted(set(record.layers) - set(expected))[:3]
        raise QuantizationRecordError(
            f"{source or QUANTIZATION_FILE}: layers do not match the model's linear layers "
            f"(not listed: {missing}; not in the model: {extra}); re-save the student"
        )
    prepare_qat(model, record.qat_config())


def load_fake_quantized(model: nn.Module, model_dir: str | Path) -> QuantizationRecord | None:
    """Fake-quantize a loaded student as its directory's record says; ``None``: a float one."""
    record = read_quantization(model_dir)
    if record is not None:
        apply_record(model, record, str(Path(model_dir) / QUANTIZATION_FILE))
    return record


def post_training_quantize(student_dir: str | Path, out_dir: str | Path, config: QATConfig) -> Path:
    """Write ``out_dir``: a copy of the float student with ``config`` applied and no training.

    The files of ``student_dir`` are copied byte for byte and :data:`QUANTIZATION_FILE`
    (``origin: ptq``) is added, all inside a scratch directory that replaces ``out_dir``
    only when complete (:func:`kd_train.atomic.atomic_dir`). The record is the one
    :func:`prepare_qat` gives the loaded student, so kd-eval and kd-convert read the copy
    as they read a QAT student.

    Raises:
        QuantizationRecordError: ``student_dir`` already carries :data:`QUANTIZATION_FILE`
            (it is quantized already), is not a saved ``transformers`` model (or does not
            load), or is ``out_dir`` itself.
        InvalidConfigError: an int4 group size does not divide a layer's input width.
        QATUnavailableError: torchao is not installed.
    """
    source, target = Path(student_dir), Path(out_dir)
    existing = read_quantization(source)
    if existing is not None:
        raise QuantizationRecordError(
            f"{source / QUANTIZATION_FILE}: the student is quantized already "
            f"({existing.origin}, {existing.scheme}); post-training quantization takes the "
            "float student (the fp32 run's student directory)"
        )
    if not (source / "config.json").is_file():
        raise QuantizationRecordError(
            f"{source} has no config.json, so it is not a saved student; pass the directory "
            "written by save_pretrained (a run's student/)"
        )
    if target.resolve() == source.resolve():
        raise QuantizationRecordError(f"{target}: write the quantized copy to another directory")
    try:
        model = AutoModelForCausalLM.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise QuantizationRecordError(f"cannot load the student {source}: {exc}") from exc
    prepare_qat(model, config)
    record = quantization_record(model, config, origin="ptq")
    with atomic_dir(target) as scratch:
        shutil.copytree(source, scratch, dirs_exist_ok=True)
        write_quantization(scratch, record)
    return target


def _output_head(model: nn.Module) -> nn.Module | None:
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return head if isinstance(head, nn.Module) else None
