"""What every export format provides: write, describe (structure) and run.

A format module exposes ``ARTIFACT`` (file or directory name inside the export directory),
``export(wrapper, program, spec, path)``, ``describe(path) -> IOSignature`` (the I/O names,
dtypes and shapes read back from the artifact itself, for ``verify``) and
``load_runner(path) -> Runner``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kd_convert.errors import KDConvertError

#: ``runner(input_ids, attention_mask) -> logits``: int32 ``[B, T]`` arrays in, float ``[B, T, V]``.
Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]
#: One shape; ``None`` marks a dynamic dimension.
Shape = list[int | None]


class RuntimeUnavailableError(KDConvertError):
    """The format's runtime does not exist on this system (Core ML prediction off macOS)."""


@dataclass(frozen=True)
class TensorSig:
    """Name, dtype and accepted shapes of one model input or output.

    ``name`` is ``None`` when the format keeps no name (TorchScript outputs); ``shapes`` is
    ``None`` when the format does not record them (Core ML outputs).
    """

    name: str | None
    dtype: str
    shapes: list[Shape] | None


@dataclass(frozen=True)
class IOSignature:
    """The inputs and outputs an artifact declares, plus format details.

    ``opset`` is the ONNX opset; ``states`` the Core ML state tensors (``None``: the format
    has none).
    """

    inputs: list[TensorSig]
    outputs: list[TensorSig]
    opset: int | None = None
    states: list[TensorSig] | None = None


def dtype_name(dtype: object) -> str:
    """Return the short dtype name used in contracts: ``"int32"``, ``"float32"``, ...

    >>> import numpy as np, torch
    >>> from kd_convert.formats.base import dtype_name
    >>> dtype_name(torch.int32), dtype_name(np.dtype("float16"))
    ('int32', 'float16')
    """
    return str(dtype).removeprefix("torch.")
