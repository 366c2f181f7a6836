"""``torch.export``: the validated ExportedProgram saved as a ``.pt2`` archive.

With several enumerated lengths the sequence axis is a ``Dim("seq", min, max)``; the
contract still lists the enumerated lengths, the only ones parity proves.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from kd_train.atomic import atomic_path
from torch import nn
from torch.export import ExportedProgram

from kd_convert.formats.base import (
    IOSignature,
    Runner,
    Shape,
    TensorSig,
    dtype_name,
    require_trust,
)
from kd_convert.spec import ExportSpec

ARTIFACT = "model.pt2"
#: What :func:`~kd_convert.formats.base.require_trust` calls this format in a refusal.
KIND = "torch.export archive"


def export(
    wrapper: nn.Module,
    program: ExportedProgram,
    spec: ExportSpec,
    path: Path,
    names: tuple[list[str], list[str]] | None = None,
) -> None:
    """Save ``program`` (already captured and validated) to ``path``.

    ``names`` is accepted for symmetry with ONNX: the program keeps its argument names.
    """
    with atomic_path(path) as tmp:
        torch.export.save(program, tmp)


def describe(path: Path, *, trust_artifact: bool = False) -> IOSignature:
    """Read user input/output names, dtypes and (symbolic) shapes from the archive.

    Raises:
        kd_convert.errors.UntrustedArtifactError: without ``trust_artifact`` (loading unpickles).
    """
    program = _load(path, trust_artifact)
    nodes = {node.name: node for node in program.graph.nodes}
    inputs = [_sig(name, nodes[name].meta["val"]) for name in program.graph_signature.user_inputs]
    output_node = next(n for n in program.graph.nodes if n.op == "output")
    values = output_node.args[0]
    outputs = [_sig(None, value.meta["val"]) for value in values]
    return IOSignature(inputs, outputs)


def load_runner(path: Path, *, trust_artifact: bool = False) -> Runner:
    """Return a runner over ``ExportedProgram.module()``.

    Raises:
        kd_convert.errors.UntrustedArtifactError: without ``trust_artifact`` (loading unpickles).
    """
    module = _load(path, trust_artifact).module()

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = module(torch.from_numpy(input_ids), torch.from_numpy(attention_mask))
        return np.asarray(out.numpy())

    return run


def load_graph(
    path: Path, threads: int | None = None, *, trust_artifact: bool = False
) -> Callable[..., list[np.ndarray]]:
    """Return ``graph(*arrays) -> outputs`` over ``ExportedProgram.module()``.

    ``threads`` is accepted for symmetry with ONNX: torch's threads are process-wide
    (``torch.set_num_threads``).

    Raises:
        kd_convert.errors.UntrustedArtifactError: without ``trust_artifact`` (loading unpickles).
    """
    module = _load(path, trust_artifact).module()

    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            out = module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
        return [t.numpy() for t in ((out,) if isinstance(out, torch.Tensor) else out)]

    return run


def _load(path: Path, trust_artifact: bool) -> ExportedProgram:
    require_trust(path, KIND, trust_artifact)
    return torch.export.load(path)


def _sig(name: str | None, value: torch.Tensor) -> TensorSig:
    shape: Shape = [d if isinstance(d, int) else None for d in value.shape]
    return TensorSig(name, dtype_name(value.dtype), [shape])
