"""TorchScript: ``torch.jit.trace`` of the export wrapper, saved with ``torch.jit.save``.

The trace records sizes as graph values, so one trace at the smallest enumerated length
runs at every enumerated length (golden-vector parity checks each one). A saved script
module keeps input names but not dtypes, so the traced dtypes are stored inside the archive
as the extra file :data:`IO_FILE` and :func:`describe` reads them from there.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from kd_train.atomic import atomic_path
from kd_train.cliutil import drop_log_messages
from torch import nn
from torch.export import ExportedProgram

from kd_convert.formats.base import IOSignature, Runner, TensorSig, dtype_name, require_trust
from kd_convert.spec import ExportSpec
from kd_convert.validate import example_inputs

ARTIFACT = "model.ts"
#: What :func:`~kd_convert.formats.base.require_trust` calls this format in a refusal.
KIND = "TorchScript archive"
#: Name of the extra file inside the archive that records traced input/output dtypes.
IO_FILE = "kd_convert_io.json"
#: transformers' notice when the trace reads ``loss_function`` of the base model, which has
#: no loss (ours is computed by kd, never by that property).
LOSS_TYPE_NOTICE = r"`loss_type=None` was set in the config but it is unrecognized\. .*"


def export(wrapper: nn.Module, program: ExportedProgram, spec: ExportSpec, path: Path) -> None:
    """Trace ``wrapper`` on int32 example inputs and save the script module to ``path``."""
    inputs = example_inputs(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated upstream; still supported
        # the trace reads every attribute, loss_function of the inner model included
        with drop_log_messages("transformers.modeling_utils", LOSS_TYPE_NOTICE):
            traced = torch.jit.trace(wrapper, inputs, check_trace=False)
    with torch.no_grad():
        output = traced(*inputs)
    io = {
        "inputs": [dtype_name(t.dtype) for t in inputs],
        "outputs": [dtype_name(output.dtype)],
        "batch": spec.batch_size,
    }
    with atomic_path(path) as tmp:
        torch.jit.save(traced, str(tmp), _extra_files={IO_FILE: json.dumps(io)})


def describe(path: Path, *, trust_artifact: bool = False) -> IOSignature:
    """Read input names (forward schema) and traced dtypes/shapes back from the file.

    Raises:
        kd_convert.errors.UntrustedArtifactError: without ``trust_artifact`` (loading unpickles).
    """
    require_trust(path, KIND, trust_artifact)
    extra = {IO_FILE: ""}
    module = torch.jit.load(str(path), _extra_files=extra)
    io = json.loads(extra[IO_FILE] or "{}")
    names = [arg.name for arg in module.forward.schema.arguments[1:]]
    dtypes = io.get("inputs") or ["unknown"] * len(names)
    inputs = [
        TensorSig(name, dtype, [[io.get("batch"), None]])
        for name, dtype in zip(names, dtypes, strict=False)
    ]
    outputs = [TensorSig(None, dtype, None) for dtype in io.get("outputs", ["unknown"])]
    return IOSignature(inputs, outputs)


def load_runner(path: Path, *, trust_artifact: bool = False) -> Runner:
    """Return a runner over the loaded script module (CPU).

    Raises:
        kd_convert.errors.UntrustedArtifactError: without ``trust_artifact`` (loading unpickles).
    """
    require_trust(path, KIND, trust_artifact)
    module = torch.jit.load(str(path))

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = module(torch.from_numpy(input_ids), torch.from_numpy(attention_mask))
        return np.asarray(out.numpy())

    return run
