"""What every export format provides: write, describe (structure) and run.

A format module exposes ``ARTIFACT`` (file or directory name inside the export directory),
``export(wrapper, program, spec, path)``, ``describe(path, *, trust_artifact=False) ->
IOSignature`` (the I/O names, dtypes and shapes read back from the artifact itself, for
``verify``) and ``load_runner(path, *, trust_artifact=False) -> Runner``.

Formats read through pickle (TorchScript, ``torch.export``) open a file only through
:func:`require_trust`: without ``trust_artifact`` they refuse, and an archive holding more
than tensors is refused even with it (:func:`kd_train.artifacts.archive_problems`). ONNX
(protobuf, read by ``onnx``/onnxruntime) and Core ML (a protobuf spec) run no code of the
file's author and take the keyword only for a uniform call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from kd_train.artifacts import archive_problems, untrusted_message

from kd_convert.errors import KDConvertError, UntrustedArtifactError

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


def require_trust(path: Path, kind: str, trust_artifact: bool) -> None:
    """Refuse to unpickle ``path`` (a ``kind`` archive) unless it is trusted and holds tensors.

    The archive's structure is read first, without executing anything, so a payload is named
    whether or not trust was given.

    Raises:
        UntrustedArtifactError: the archive holds more than kd writes, or no trust was given.
    """
    problems = archive_problems(path)
    if problems:
        raise UntrustedArtifactError(
            "; ".join(problems) + ": kd's exports hold nothing of the kind, so kd refuses to "
            "load this archive, with or without --trust-artifact; re-export it"
        )
    if not trust_artifact:
        raise UntrustedArtifactError(untrusted_message(path, kind))
