"""Export a QAT student with the numbers it was trained with: integer weights and their scales.

A student distilled with ``qat`` (:mod:`kd_train.trainer.qat`) is saved as float weights plus
``quantization.json``. :func:`load_qat_student` rebuilds two models from it:

* the **reference**: the float student fake-quantized by torchao exactly as in training (the
  model parity compares every export with);
* the **export model**: the same student whose fake-quantized layers are
  :class:`QuantizedLinear`: int8 weight tensors (int4 values for ``int4``) and the float32
  scales torchao's observer computed (:func:`kd_train.trainer.qat.weight_qparams`).

A :class:`QuantizedLinear` computes, for input ``x`` ``[..., in]``::

    w = dequantize_per_channel(q, scale)      q: [rows, g] int8, scale: [rows]; rows = out·in/g
    x = fake_quantize_per_token(x)            int8 scheme only (below)
    y = x @ w.reshape(out, in).T + bias

``g`` is the group width (``in`` for per-channel int8, 32 or 64 for int4), so one
dequantization along axis 0 covers both layouts; ``torch.onnx`` writes it as ONNX
``DequantizeLinear`` over an int8 initializer. The per-token activation step is torchao's
formula (asymmetric int8, see :mod:`kd_train.trainer.qat`) written in plain ops (min, max,
round, clip), which every runtime has. In PyTorch the export model's logits equal the
reference's bit for bit (``tests``); onnxruntime's fused quantized kernels reorder the sums,
hence the ``onnx+qat`` parity threshold (:data:`kd_convert.parity.THRESHOLDS`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from kd_train.trainer import qat
from torch import nn
from transformers import PreTrainedModel

from kd_convert.errors import UnsupportedModelError
from kd_convert.wrapper import load_student

#: The smallest scale of a token (torchao's ``eps`` for per-token activations).
_TOKEN_EPS = torch.finfo(torch.float32).eps
#: ``(q_min, q_max)`` of the stored weights, per scheme.
_WEIGHT_BOUNDS = {"int8": (-128, 127), "int4": (-8, 7)}


def fake_quantize_per_token(x: torch.Tensor) -> torch.Tensor:
    """Asymmetric int8 fake quantization of each row of the last axis (torchao's numbers).

    ``s = (max(x, 0) - min(x, 0)) / 255``, ``z = clamp(-128 - round(min(x, 0) / s))``,
    ``x_hat = (clamp(round(x · (1/s)) + z, -128, 127) - z) · s``.

    >>> import torch
    >>> from kd_convert.quantized import fake_quantize_per_token
    >>> fake_quantize_per_token(torch.tensor([[0.0, 1.0, 2.55]])).tolist()
    [[0.0, 1.0, 2.549999952316284]]
    """
    low = torch.clamp(x.amin(dim=-1, keepdim=True), max=0.0)
    high = torch.clamp(x.amax(dim=-1, keepdim=True), min=0.0)
    scale = torch.clamp((high - low) / 255.0, min=_TOKEN_EPS)
    zero = torch.clamp(-128.0 - torch.round(low / scale), -128.0, 127.0)
    q = torch.clamp(torch.round(x * (1.0 / scale)) + zero, -128.0, 127.0)
    return (q - zero) * scale


class QuantizedLinear(nn.Module):
    """A fake-quantized linear layer as integer weights + scales (what an export stores).

    Args:
        layer: a torchao ``FakeQuantizedLinear`` (after :func:`kd_train.trainer.qat.prepare_qat`).
        scheme: ``"int8"`` (per-token activations too) or ``"int4"`` (weights only).
    """

    def __init__(self, layer: torch.nn.Module, scheme: str) -> None:
        super().__init__()
        q, scale = qat.weight_qparams(layer)
        out_features, in_features = q.shape
        group = in_features // scale.shape[1]
        self.scheme = scheme
        self.shape = (out_features, in_features)
        self.register_buffer("weight_q", q.reshape(-1, group).contiguous())
        self.register_buffer("weight_scale", scale.reshape(-1).contiguous())
        self.register_buffer("weight_zero", torch.zeros(scale.numel(), dtype=torch.int32))
        bias = getattr(layer, "bias", None)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    def weight(self) -> torch.Tensor:
        """The dequantized weight ``[out, in]``: ``q · scale`` per group."""
        low, high = _WEIGHT_BOUNDS[self.scheme]
        dequantized = torch.ops.quantized_decomposed.dequantize_per_channel(
            self.weight_q, self.weight_scale, self.weight_zero, 0, low, high, torch.int8
        )
        return dequantized.reshape(self.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., in] -> [..., out]`` with the trained scheme's numbers."""
        if self.scheme == "int8":
            x = fake_quantize_per_token(x)
        return nn.functional.linear(x, self.weight(), self.bias)


@dataclass(frozen=True)
class QATStudent:
    """A QAT student loaded for export: its record, the torchao reference, the export model."""

    record: qat.QuantizationRecord
    reference: PreTrainedModel
    export_model: PreTrainedModel

    def summary(self) -> dict[str, Any]:
        """What ``contract.json`` records under ``quantization``."""
        return {
            "origin": self.record.origin,
            "scheme": self.record.scheme,
            "group_size": self.record.group_size,
            "layers": len(self.record.layers),
            "weights": "int8 tensors (int4 values for int4) + float32 scales, DequantizeLinear",
            "activations": "int8 per token, dynamic" if self.record.scheme == "int8" else "float",
        }


def load_qat_student(model_dir: str | Path) -> QATStudent | None:
    """Load the reference and export models of a QAT student; ``None`` for a float one.

    Raises:
        kd_train.trainer.qat.QuantizationRecordError: ``quantization.json`` is malformed or
            names other layers than the model has.
        UnsupportedModelError: torchao is not installed.
    """
    record = qat.read_quantization(model_dir)
    if record is None:
        return None
    _register_quantized_ops()
    reference = load_student(model_dir)
    try:
        qat.apply_record(reference, record, str(Path(model_dir) / qat.QUANTIZATION_FILE))
    except qat.QATUnavailableError as exc:
        raise UnsupportedModelError(f"{model_dir} is a QAT student: {exc}") from None
    export_model = load_student(model_dir)
    qat.apply_record(export_model, record)
    for name in record.layers:
        parent, _, child = name.rpartition(".")
        layer = export_model.get_submodule(name)
        setattr(export_model.get_submodule(parent), child, QuantizedLinear(layer, record.scheme))
    reference.eval()
    export_model.eval()
    return QATStudent(record, reference, export_model)


def _register_quantized_ops() -> None:
    """Make ``torch.ops.quantized_decomposed`` available (PyTorch registers it on import)."""
    importlib.import_module("torch.ao.quantization.fx._decomposed")
