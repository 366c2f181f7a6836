"""Core ML through coremltools: an ML program, fp16 compute, enumerated sequence lengths.

Conversion goes from the validated ``torch.export`` program (decomposed to core ATen), not
from a TorchScript trace: with coremltools 9.0 and numpy 2.x the TorchScript frontend fails on
the ``aten::Int`` of ``rotate_half``'s ``x.shape[-1] // 2`` (``_cast`` calls ``int()`` on a
1-element array: "only 0-dimensional arrays can be converted to Python scalars").

Prediction (:func:`load_runner`) exists only on macOS; elsewhere it raises
:class:`~kd_convert.formats.base.RuntimeUnavailableError` and parity reports "needs macOS".
Saving, loading the spec and :func:`describe` work everywhere.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from kd_train.atomic import atomic_path
from torch import nn
from torch.export import ExportedProgram

from kd_convert.errors import ConversionError
from kd_convert.formats.base import (
    IOSignature,
    Runner,
    RuntimeUnavailableError,
    Shape,
    TensorSig,
)
from kd_convert.spec import ExportSpec
from kd_convert.stateful import STATE_NAMES, STEP_INPUTS, CacheLayout
from kd_convert.validate import import_coremltools
from kd_convert.wrapper import INPUT_NAMES, OUTPUT_NAMES

ARTIFACT = "model.mlpackage"
#: Oldest OS the package runs on (ML program, fp16 compute, float32 logits output).
DEPLOYMENT_TARGET = "macOS15"
_ARRAY_TYPES = {65568: "float32", 65552: "float16", 131104: "int32", 65600: "float64"}


def export(wrapper: nn.Module, program: ExportedProgram, spec: ExportSpec, path: Path) -> None:
    """Convert ``program`` to an ``.mlpackage`` at ``path`` (int8 weights if asked)."""
    _save(convert(program, spec), spec, path)


def export_stateful(
    program: ExportedProgram, spec: ExportSpec, layout: CacheLayout, path: Path
) -> None:
    """Convert the generation graph to a stateful ``.mlpackage`` (fp16 ``StateType`` caches).

    ``program`` is the decomposed capture of :class:`~kd_convert.stateful.StatefulWrapper`:
    its in-place buffer writes become Core ML state updates.
    """
    ct = _coremltools()
    batch = spec.batch_size
    shape = (layout.layers, batch, layout.kv_heads, layout.max_length, layout.head_dim)

    def flexible(name: str) -> Any:
        length = ct.RangeDim(lower_bound=1, upper_bound=layout.max_length, default=1)
        return ct.TensorType(name=name, shape=(batch, length), dtype=np.int32)

    state = ct.TensorType(shape=shape, dtype=np.float16)
    model = _convert(
        "the stateful model",
        program,
        inputs=[flexible(name) for name in STEP_INPUTS],
        states=[ct.StateType(wrapped_type=state, name=n) for n in STATE_NAMES],
    )
    _save(model, spec, path)


def _convert(what: str, program: ExportedProgram, **options: Any) -> Any:
    """``ct.convert`` to an fp16 ML program with float32 logits; its failure names ``what``."""
    ct = _coremltools()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "torch X has not been tested with coremltools"
            return ct.convert(
                program,
                outputs=[ct.TensorType(name=n, dtype=np.float32) for n in OUTPUT_NAMES],
                convert_to="mlprogram",
                compute_precision=ct.precision.FLOAT16,
                minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET),
                **options,
            )
    except Exception as exc:  # coremltools raises bare ValueError/NotImplementedError/...
        raise ConversionError(
            f"coremltools could not convert {what}: {type(exc).__name__}: {exc}"
        ) from exc


def _save(model: Any, spec: ExportSpec, path: Path) -> None:
    ct = _coremltools()
    if spec.quantize == "int8":
        config = ct.optimize.coreml.OptimizationConfig(
            global_config=ct.optimize.coreml.OpLinearQuantizerConfig(
                mode="linear_symmetric", dtype="int8"
            )
        )
        model = ct.optimize.coreml.linear_quantize_weights(model, config=config)
    with atomic_path(path) as tmp:
        model.save(str(tmp))


def convert(program: ExportedProgram, spec: ExportSpec) -> Any:
    """Return the ``ct.models.MLModel`` for ``program`` with the spec's enumerated shapes."""
    ct = _coremltools()
    shapes = spec.input_shapes()

    def shape() -> Any:
        if len(shapes) == 1:
            return tuple(shapes[0])
        return ct.EnumeratedShapes(shapes=shapes, default=shapes[0])

    return _convert(
        "the model",
        program.run_decompositions({}),
        inputs=[ct.TensorType(name=n, shape=shape(), dtype=np.int32) for n in INPUT_NAMES],
    )


def describe(path: Path, *, trust_artifact: bool = False) -> IOSignature:
    """Read I/O names, dtypes and enumerated shapes from the package's model spec.

    The spec is protobuf and runs nothing: ``trust_artifact`` is accepted and unused.
    """
    spec = _coremltools().utils.load_spec(str(path))
    states = [
        TensorSig(f.name, _ARRAY_TYPES.get(f.type.stateType.arrayType.dataType, "unknown"),
                  [list(f.type.stateType.arrayType.shape)])
        for f in spec.description.state
    ]  # fmt: skip
    return IOSignature(
        [_sig(feature) for feature in spec.description.input],
        [_sig(feature) for feature in spec.description.output],
        states=states or None,
    )


def _mlmodel(path: Path) -> Any:
    """Load the package at ``path`` for prediction; refuse off macOS, naming the path."""
    if sys.platform != "darwin":
        raise RuntimeUnavailableError(
            f"Core ML prediction needs macOS (this is {sys.platform}); {path} was checked "
            "structurally only: run parity on a Mac"
        )
    return _coremltools().models.MLModel(str(path))  # pragma: no cover - macOS only


def load_runner(path: Path, *, trust_artifact: bool = False) -> Runner:
    """Return a runner over ``MLModel.predict`` (macOS only; ``trust_artifact``: unused).

    Raises:
        RuntimeUnavailableError: not on macOS, where Core ML prediction does not exist.
    """
    model = _mlmodel(path)

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:  # pragma: no cover
        out = model.predict({"input_ids": input_ids, "attention_mask": attention_mask})
        return np.asarray(out["logits"], dtype=np.float32)

    return run  # pragma: no cover


def load_stateful(
    path: Path, *, trust_artifact: bool = False
) -> tuple[Callable[..., list[Any]], Callable[..., list[Any]]]:
    """Return ``(prefill, decode)`` over a stateful package's ``predict`` (macOS only).

    ``trust_artifact`` is accepted and unused: a Core ML package holds no pickle.

    ``prefill`` makes a fresh state and returns ``[logits, state]``; ``decode`` takes that
    state as its cache and returns it again: the generate loop passes it through unchanged.

    Raises:
        RuntimeUnavailableError: not on macOS, where Core ML prediction does not exist.
    """
    model = _mlmodel(path)

    def step(state: Any, *arrays: np.ndarray) -> list[Any]:  # pragma: no cover - macOS only
        feeds = dict(zip(STEP_INPUTS, arrays, strict=True))
        out = model.predict(feeds, state=state)
        return [np.asarray(out["logits"], dtype=np.float32), state]

    def prefill(*arrays: np.ndarray) -> list[Any]:  # pragma: no cover - macOS only
        return step(model.make_state(), *arrays)

    def decode(*arrays: Any) -> list[Any]:  # pragma: no cover - macOS only
        return step(arrays[3], *arrays[:3])

    return prefill, decode  # pragma: no cover - macOS only


def _sig(feature: Any) -> TensorSig:
    array = feature.type.multiArrayType
    dtype = _ARRAY_TYPES.get(array.dataType, f"coreml:{array.dataType}")
    if array.HasField("shapeRange"):  # flexible (RangeDim) axes: None where not fixed
        ranges = array.shapeRange.sizeRanges
        flexible: Shape = [r.lowerBound if r.lowerBound == r.upperBound else None for r in ranges]
        return TensorSig(feature.name, dtype, [flexible])
    enumerated: list[Shape] = [list(s.shape) for s in array.enumeratedShapes.shapes]
    fixed: list[Shape] = [list(array.shape)] if len(array.shape) else []
    return TensorSig(feature.name, dtype, enumerated or fixed or None)


def _coremltools() -> Any:
    try:
        import_coremltools()
        import coremltools
        import coremltools.optimize  # registers ct.optimize.coreml
    except ImportError as exc:  # pragma: no cover - the [coreml] extra is not installed
        raise ConversionError(
            "Core ML export needs coremltools: pip install 'kd-convert[coreml]'"
        ) from exc
    return coremltools
