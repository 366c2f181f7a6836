"""Checks that run before any conversion and fail with a message naming the op and the line.

:func:`capture` records the module with ``torch.export`` (non-strict) on the spec's
enumerated lengths; data-dependent ``if``/``while`` on tensors, or on the sequence length,
make that fail and are reported as *dynamic control flow*. :func:`validate` then walks the
graph:

* ``int64``: every model input must be int32 and no op may produce an int64 tensor — Apple's
  Neural Engine runs int32, and int64 index math (``arange``, ``cumsum``, ``.long()``) on the
  mask/position path is what makes converted models fall back to the CPU or fail.
* unsupported ops: for Core ML, every op of the decomposed graph must have a converter in
  coremltools' own registry (the one ``ct.convert`` uses); for ONNX, in the torch.onnx
  (torchlib) registry at the requested opset.

>>> import torch
>>> from torch import nn
>>> from kd_convert.spec import ExportSpec
>>> from kd_convert.validate import validate
>>> class Widen(nn.Module):
...     def forward(self, input_ids, attention_mask):
...         return (input_ids * attention_mask.long()).float()
>>> validate(Widen(), ExportSpec("onnx", seq_lengths=(4,)))
Traceback (most recent call last):
...
kd_convert.errors.ValidationError: export of Widen for onnx rejected: ...
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import torch
from kd_train.cliutil import drop_log_messages
from torch import nn
from torch.export import Dim, ExportedProgram

from kd_convert.errors import ValidationError
from kd_convert.spec import ExportSpec
from kd_convert.stateful import STEP_INPUTS, CacheLayout
from kd_convert.wrapper import INPUT_NAMES

#: torch.onnx's line for each torchvision op its registry skips; kd exports no vision op.
TORCHVISION_NOTICE = r"torchvision is not installed\. Skipping torchvision::\w+"
#: coremltools' import-time notice when torch is newer than the versions it lists.
COREML_TORCH_NOTICE = r"Torch version \S+ has not been tested with coremltools\. .*"
#: Its import-time notices off macOS, where the native runtime (libcoremlpython) is absent.
COREML_RUNTIME_NOTICE = (
    r"Failed to load _ML\w+Proxy: No module named 'coremltools\.libcoremlpython'"
)

#: How many problems one error message lists before "and N more".
MAX_LISTED = 6
_GUARD_ERRORS = ("data-dependent", "Constraints violated", "guard")


def example_inputs(spec: ExportSpec, length: int | None = None) -> tuple[torch.Tensor, ...]:
    """Return int32 ``(input_ids, attention_mask)`` of shape ``[batch, length]`` for tracing.

    ``length`` defaults to the smallest enumerated length. Ids alternate ``1, 2, 1, 2, ...``
    (any ids the vocabulary holds would do); the mask is all ones.
    """
    n = spec.seq_lengths[0] if length is None else length
    ids = (torch.arange(n, dtype=torch.int32) % 2 + 1).repeat(spec.batch_size, 1)
    return ids, torch.ones(spec.batch_size, n, dtype=torch.int32)


def dynamic_shapes(spec: ExportSpec) -> dict[str, dict[int, Dim]] | None:
    """Return ``torch.export`` dynamic shapes for the sequence axis, or ``None`` if one length."""
    if len(spec.seq_lengths) == 1:
        return None
    seq = Dim("seq", min=spec.seq_lengths[0], max=spec.seq_lengths[-1])
    return {name: {1: seq} for name in INPUT_NAMES}


def capture(
    module: nn.Module,
    spec: ExportSpec,
    inputs: tuple[torch.Tensor, ...] | None = None,
    dynamic: Any = None,
) -> ExportedProgram:
    """Record ``module`` with ``torch.export`` for ``spec``; control flow fails here.

    ``dynamic`` overrides the dynamic shapes (default: :func:`dynamic_shapes` of ``spec``).

    Raises:
        ValidationError: the forward branches on tensor values or on the sequence length.
    """
    args = example_inputs(spec) if inputs is None else inputs
    try:
        with torch.no_grad():
            shapes = dynamic_shapes(spec) if dynamic is None else dynamic
            return torch.export.export(module, args, dynamic_shapes=shapes)
    except Exception as exc:  # torch raises several unrelated types for the same problem
        text = str(exc)
        if not any(marker in text for marker in _GUARD_ERRORS):
            raise
        first = text.strip().splitlines()[0]
        raise ValidationError(
            f"export of {type(module).__name__} rejected: dynamic control flow (a Python "
            f"branch on a tensor value or on the sequence length) cannot be exported for "
            f"{spec.format} with lengths {spec.seq_lengths}: {first} ({_caused_by(text)}); "
            "compute both branches and select with arithmetic, or export a fixed length"
        ) from exc


def validate(module: nn.Module, spec: ExportSpec) -> ExportedProgram:
    """Capture ``module`` and run every check for ``spec.format``; return the program.

    Raises:
        ValidationError: listing every problem found, each naming the op and source line.
    """
    return check_program(capture(module, spec), type(module).__name__, spec)


def check_program(program: ExportedProgram, name: str, spec: ExportSpec) -> ExportedProgram:
    """Run the int32 and supported-op checks on a captured ``program`` of module ``name``.

    Raises:
        ValidationError: listing every problem found, each naming the op and source line.
    """
    if spec.format == "coreml":  # ct.convert sees the core-ATen graph: check (and pass) that
        program = program.run_decompositions({})
    found = [*int32_problems(program), *unsupported_op_problems(program, spec)]
    problems = list(dict.fromkeys(found))
    if problems:
        shown = problems[:MAX_LISTED]
        more = len(problems) - len(shown)
        listed = "; ".join(shown) + (f"; and {more} more" if more else "")
        raise ValidationError(f"export of {name} for {spec.format} rejected: {listed}")
    return program


def validate_stateful(module: nn.Module, spec: ExportSpec) -> ExportedProgram:
    """Capture and check the Core ML generation graph (a ``StatefulWrapper``).

    The new-token axis of ``input_ids``/``position_ids`` and the key axis of
    ``attention_mask`` are dynamic; the cache buffers keep their fixed shape.

    Raises:
        ValidationError: as :func:`validate`.
    """
    n, batch = spec.seq_lengths[0], spec.batch_size
    ids, mask = example_inputs(spec, n)
    positions = torch.arange(n, dtype=torch.int32).repeat(batch, 1)
    dynamic = ({1: Dim.DYNAMIC}, {1: Dim.DYNAMIC}, {1: Dim.DYNAMIC})
    program = capture(module, spec, (ids, mask, positions), dynamic)
    return check_program(program, type(module).__name__, spec)


def validate_generation(
    prefill: nn.Module, decode: nn.Module, spec: ExportSpec, layout: CacheLayout
) -> tuple[ExportedProgram, ExportedProgram]:
    """Capture and check the prefill and decode wrappers; return their programs.

    The prefill prompt axis is ``Dim("seq", min=2, max=layout.max_length)``; the decode
    graph's cache axis (and its attention mask, one longer) is dynamic.

    Raises:
        ValidationError: as :func:`validate`, for either graph.
    """
    n, batch = spec.seq_lengths[0], spec.batch_size
    ids, mask = example_inputs(spec, n)
    positions = torch.arange(n, dtype=torch.int32).repeat(batch, 1)
    seq = Dim("seq", min=2, max=layout.max_length)
    program = capture(prefill, spec, (ids, mask, positions), [{1: seq}] * len(STEP_INPUTS))
    shape = (batch, layout.kv_heads, n, layout.head_dim)
    past = tuple(torch.zeros(shape) for _ in range(2 * layout.layers))
    step = (ids[:, :1], torch.ones(batch, n + 1, dtype=torch.int32), positions[:, -1:] + 1)
    cache = Dim.DYNAMIC
    step_program = capture(
        decode, spec, (*step, *past), ({}, {1: cache}, {}, tuple({2: cache} for _ in past))
    )
    return (
        check_program(program, type(prefill).__name__, spec),
        check_program(step_program, type(decode).__name__, spec),
    )


def int32_problems(program: ExportedProgram) -> list[str]:
    """Return one message per int64 model input and per op that produces an int64 tensor."""
    problems = []
    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        value = node.meta.get("val")
        if not isinstance(value, torch.Tensor) or value.dtype != torch.int64:
            continue
        if node.op == "placeholder" and node.name in user_inputs:
            problems.append(
                f"input {node.name!r} is int64: feed int32 input_ids/attention_mask "
                "(the Neural Engine needs int32)"
            )
        elif node.op == "call_function":
            problems.append(
                f"op {_op_name(node.target)} produces an int64 tensor on the attention/position "
                f"path at {_where(node)}: compute it in int32 (e.g. torch.arange(..., "
                "dtype=torch.int32), no .long()/cumsum on the mask)"
            )
    return problems


def unsupported_op_problems(program: ExportedProgram, spec: ExportSpec) -> list[str]:
    """Return one message per op of ``program`` the target format cannot convert.

    For Core ML, pass the decomposed program (``run_decompositions({})``), which is what
    coremltools converts.
    """
    if spec.format == "coreml":
        return [
            f"op {_op_name(node.target)} has no Core ML converter in coremltools "
            f"(at {_where(node)}): rewrite it with supported ops, e.g. comparisons and "
            "multiplication instead of new_ones/__and__/diff"
            for node in _unique_ops(program)
            if not _coreml_supports(node.target)
        ]
    if spec.format == "onnx":
        return [
            f"op {_op_name(node.target)} has no ONNX (opset {spec.opset}) translation in "
            f"torch.onnx (at {_where(node)}): rewrite it with supported ops"
            for node in _unique_ops(program)
            if not _onnx_supports(node.target, spec.opset)
        ]
    return []


def _unique_ops(program: ExportedProgram) -> Iterable[torch.fx.Node]:
    seen: set[str] = set()
    for node in program.graph.nodes:
        name = _op_name(node.target)
        if node.op == "call_function" and name not in seen:
            seen.add(name)
            yield node


def import_coremltools() -> ModuleType:
    """Import coremltools without its import-time notices; its other messages still show.

    The notices dropped are :data:`COREML_TORCH_NOTICE` and, off macOS,
    :data:`COREML_RUNTIME_NOTICE`.

    Raises:
        ImportError: coremltools is not installed (the ``coreml`` extra).
    """
    with contextlib.ExitStack() as quiet:
        quiet.enter_context(drop_log_messages("coremltools", COREML_TORCH_NOTICE))
        if sys.platform != "darwin":
            quiet.enter_context(drop_log_messages("coremltools", COREML_RUNTIME_NOTICE))
        import coremltools

    return coremltools


def _coreml_supports(target: object) -> bool:
    import_coremltools()
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY
    from coremltools.converters.mil.frontend.torch.utils import sanitize_op_kind

    # The same lookup ct.convert does for a torch.export graph (internal_graph.py).
    name = target.name() if isinstance(target, torch._ops.OpOverload) else _op_name(target)
    return sanitize_op_kind(name) in _TORCH_OPS_REGISTRY.name_to_func_mapping


def _onnx_supports(target: object, opset: int) -> bool:
    if not isinstance(target, torch._ops.OpOverload) or _is_bookkeeping(target):
        return True  # Python-level helpers and shape asserts never reach the ONNX graph
    # torch.onnx decomposes what it has no direct translation for, so any of these will do.
    composite = torch._C._dispatch_has_kernel_for_dispatch_key(
        target.name(), "CompositeImplicitAutograd"
    )
    return bool(
        composite or _onnx_registry(opset).is_registered(target) or target in _decompositions()
    )


@functools.cache
def _decompositions() -> Any:
    return torch.export.default_decompositions()


@functools.cache
def _onnx_registry(opset: int) -> Any:
    from torch.onnx._internal.exporter._registration import ONNXRegistry

    with drop_log_messages("torch.onnx._internal.exporter._registration", TORCHVISION_NOTICE):
        return ONNXRegistry.from_torchlib(opset)


def _is_bookkeeping(target: torch._ops.OpOverload) -> bool:
    name = target.name()
    return name.startswith(("aten::_assert", "aten::sym_")) or name == "aten::sym_size.int"


def _op_name(target: object) -> str:
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    return getattr(target, "__name__", str(target))


def _where(node: torch.fx.Node) -> str:
    trace = node.meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+)', trace)
    if not frames:
        return f"graph node {node.name}"
    path, line = frames[-1]
    return f"{path}:{line}"


def _caused_by(text: str) -> str:
    match = re.search(r"Caused by: \(([^)]*)\)", text)
    return match.group(1) if match else "see the torch.export message"
