"""LoRA students: peft low-rank adapters trained in place of the student's weights.

:func:`add_adapters` injects peft's LoRA layers into the student (``get_peft_model``) and
returns the student itself, now holding them: the loop, the chunked loss and the
checkpoints see the same ``transformers`` model as in a full run, in which only the
adapters require a gradient. For a targeted linear layer ``W`` (``[out, in]``)::

    y = W x + (alpha / rank) · B (A dropout(x))      A: [rank, in], B: [out, rank], B₀ = 0

The optimiser holds the adapters only (the loop builds it over the parameters that require
a gradient), so a checkpoint's optimiser state is the adapters'; its weights file holds the
frozen base too, and the checkpoint's fingerprints hold the base model's
(``fingerprint.student``, :func:`base_fingerprint`), so a resume on another base is refused.

:func:`merge_adapters` folds every adapter into its layer (``W ← W + (alpha / rank) · B A``)
and removes the peft layers, as peft's ``merge_and_unload`` does: the saved student is a
plain ``transformers`` model that kd-eval and kd-convert load as any other.

peft is imported only here, when ``student.lora`` is set (``pip install kd-train[lora]``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from torch import nn

from kd_train.errors import KDTrainError
from kd_train.teachers.fingerprint import weights_fingerprint
from kd_train.trainer.train_config import LoraConfig, StudentConfig
from kd_train.typed_config import InvalidConfigError


class LoraUnavailableError(KDTrainError):
    """peft is not installed; the message says which extra brings it."""


def peft() -> ModuleType:
    """Import ``peft`` or say how to install it.

    Raises:
        LoraUnavailableError: peft is not installed.
    """
    try:
        return importlib.import_module("peft")
    except ImportError as exc:
        raise LoraUnavailableError(
            f"student.lora: needs peft, which cannot be imported ({exc}); install it with "
            "'pip install kd-train[lora]'"
        ) from None


def add_adapters(model: nn.Module, config: LoraConfig) -> nn.Module:
    """Inject LoRA adapters into ``model`` (in place) and freeze everything else; return it.

    Raises:
        InvalidConfigError: a name of ``target_modules`` matches no linear layer.
        LoraUnavailableError: peft is not installed.
    """
    names = {name.rpartition(".")[2] for name, m in model.named_modules() if _linear(m)}
    missing = sorted(set(config.target_modules) - names)
    if missing:
        raise InvalidConfigError(
            f"student.lora.target_modules: {missing} name no linear layer of the student "
            f"(its linear layers: {', '.join(sorted(names))})"
        )
    lib = peft()
    settings = lib.LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        bias="none",
    )
    wrapped = lib.get_peft_model(model, settings)
    base: nn.Module = wrapped.get_base_model()
    return base


def has_adapters(model: nn.Module) -> bool:
    """Whether ``model`` holds LoRA layers (:func:`add_adapters`, not yet merged)."""
    return any(hasattr(m, "lora_A") for m in model.modules())


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base layer and drop the peft layers; return ``model``.

    ``W ← W + (alpha / rank) · B A``, then the LoRA layer is replaced by its base layer
    (peft's ``merge_and_unload`` step by step). A model without adapters is returned as is.
    """
    tuners = importlib.import_module("peft.tuners.tuners_utils") if has_adapters(model) else None
    if tuners is None:
        return model
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, tuners.BaseTunerLayer)]
    for name, layer in layers:
        layer.merge()
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, layer.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
    for param in model.parameters():
        param.requires_grad_(True)
    return model


def base_fingerprint(student: StudentConfig) -> str | None:
    """The base model's fingerprint a LoRA run's checkpoints keep (``None`` without LoRA).

    A student saved in ``student.path`` is fingerprinted by its weight files
    (:func:`kd_train.teachers.fingerprint.weights_fingerprint`); one built from
    ``student.config`` is fixed by the config and the seed, which the checkpoint holds.
    """
    if student.lora is None or student.path is None:
        return None
    return weights_fingerprint(student.path)


def _linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear)
