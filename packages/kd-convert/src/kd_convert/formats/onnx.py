"""ONNX via ``torch.onnx.export(dynamo=True)`` from the validated program; run in onnxruntime."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from kd_train.atomic import atomic_path
from kd_train.cliutil import drop_log_messages
from torch import nn
from torch.export import ExportedProgram

from kd_convert.errors import ConversionError
from kd_convert.formats.base import IOSignature, Runner, Shape, TensorSig, dtype_name
from kd_convert.spec import ExportSpec
from kd_convert.validate import TORCHVISION_NOTICE
from kd_convert.wrapper import INPUT_NAMES, OUTPUT_NAMES

ARTIFACT = "model.onnx"


def export(
    wrapper: nn.Module,
    program: ExportedProgram,
    spec: ExportSpec,
    path: Path,
    names: tuple[list[str], list[str]] | None = None,
) -> None:
    """Translate ``program`` to ONNX at ``spec.opset`` and save it to ``path``.

    ``names`` are the ``(input, output)`` names (default: those of the whole-sequence graph).
    """
    inputs, outputs = names or (list(INPUT_NAMES), list(OUTPUT_NAMES))
    try:
        with drop_log_messages("torch.onnx._internal.exporter._registration", TORCHVISION_NOTICE):
            onnx_program = torch.onnx.export(
                program,
                dynamo=True,
                input_names=inputs,
                output_names=outputs,
                opset_version=spec.opset,
                verbose=False,
            )
    except Exception as exc:  # torch.onnx raises its own and torch's errors
        raise ConversionError(f"torch.onnx could not export the model: {exc}") from exc
    if onnx_program is None:  # pragma: no cover - only for legacy TorchScript-based export
        raise ConversionError("torch.onnx.export returned no program; use dynamo=True")
    with atomic_path(path) as tmp:
        onnx_program.save(str(tmp))


def describe(path: Path, *, trust_artifact: bool = False) -> IOSignature:
    """Read graph inputs/outputs and the default-domain opset from the ONNX file.

    ``onnx`` parses protobuf and runs nothing: ``trust_artifact`` is accepted and unused.
    """
    model = onnx.load(str(path), load_external_data=False)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return IOSignature(
        [_sig(value) for value in model.graph.input],
        [_sig(value) for value in model.graph.output],
        opset=int(opset),
    )


def load_runner(path: Path, *, trust_artifact: bool = False) -> Runner:
    """Return a runner over an onnxruntime CPU session (``trust_artifact``: unused, no pickle)."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        return np.asarray(session.run(list(OUTPUT_NAMES), feeds)[0])

    return run


def load_graph(
    path: Path, threads: int | None = None, *, trust_artifact: bool = False
) -> Callable[..., list[np.ndarray]]:
    """Return ``graph(*arrays) -> outputs`` over an onnxruntime CPU session (inputs in order).

    ``threads`` sets onnxruntime's intra- and inter-op threads (default: its own choice);
    ``trust_artifact`` is accepted and unused (no pickle).
    """
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = options.inter_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [value.name for value in session.get_inputs()]

    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        return list(session.run(None, dict(zip(names, arrays, strict=True))))

    return run


def _sig(value: onnx.ValueInfoProto) -> TensorSig:
    tensor = value.type.tensor_type
    shape: Shape = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    dtype = dtype_name(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
    return TensorSig(value.name, dtype, [shape])
