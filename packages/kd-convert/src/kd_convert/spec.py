"""What to export: the typed settings of one export, validated when they are built.

A spec names the format, the batch size and the *enumerated* sequence lengths the export must
accept (e.g. ``(64, 128, 256)`` for toys, ``(512, 1024, 2048)`` for real students). Exported
graphs are traced once and accept exactly those lengths; :func:`check_sequence_length` is the
gate a runtime applies before feeding an input.

>>> from kd_convert.spec import ExportSpec
>>> spec = ExportSpec("onnx", seq_lengths=(128, 64))
>>> spec.seq_lengths
(64, 128)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from kd_convert.errors import ExportConfigError, ValidationError

Format = Literal["torchscript", "exported", "onnx", "coreml"]
#: Every export format, in the order the command line lists them.
FORMATS: tuple[Format, ...] = get_args(Format)

Quantize = Literal["int8"]
#: The QAT schemes a student may carry (``quantization.json``, see :mod:`kd_convert.quantized`).
QAT_SCHEMES = ("int8", "int4")
Task = Literal["sequence", "generation"]
#: Export tasks, ``sequence`` (one whole-sequence graph) or ``generation`` (prefill + decode).
TASKS: tuple[Task, ...] = get_args(Task)
#: Formats with a generation (prefill + decode) export.
GENERATION_FORMATS: tuple[Format, ...] = ("exported", "onnx", "coreml")
#: Default enumerated sequence lengths for toy students.
TOY_LENGTHS = (64, 128, 256)
#: ONNX opset used when none is given (torch.onnx dynamo exporter).
DEFAULT_OPSET = 18


@dataclass(frozen=True)
class ExportSpec:
    """Settings of one export.

    Args:
        format: ``"torchscript"``, ``"exported"`` (torch.export .pt2), ``"onnx"`` or
            ``"coreml"``.
        seq_lengths: the enumerated sequence lengths; stored sorted and unique.
        batch_size: fixed batch dimension of every input.
        quantize: ``"int8"`` for int8 linear weight quantization (Core ML only) or ``None``.
        opset: ONNX opset version (ONNX only).
        task: ``"sequence"`` (one whole-sequence graph) or ``"generation"`` (a prefill graph
            and a decode graph with a KV cache; for Core ML one stateful graph; not
            TorchScript).
        max_length: positions the generation cache may hold (prompt + new tokens); ``None``
            takes the model's ``max_position_embeddings`` (generation only).
        qat: the QAT scheme of the student (``"int8"``/``"int4"``), set by the export from
            its ``quantization.json``; ``None`` for a float student.
    """

    format: Format
    seq_lengths: tuple[int, ...] = TOY_LENGTHS
    batch_size: int = 1
    quantize: Quantize | None = None
    opset: int = DEFAULT_OPSET
    task: Task = "sequence"
    max_length: int | None = None
    qat: str | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ExportConfigError(
                f"unknown export format {self.format!r}: choose one of {', '.join(FORMATS)}"
            )
        lengths = tuple(sorted(set(self.seq_lengths)))
        if not lengths or any(not isinstance(n, int) or n < 2 for n in lengths):
            raise ExportConfigError(
                f"seq_lengths {self.seq_lengths!r} must be one or more integers >= 2, "
                "e.g. (64, 128, 256)"
            )
        object.__setattr__(self, "seq_lengths", lengths)
        if self.batch_size < 1:
            raise ExportConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.quantize is not None and (self.quantize != "int8" or self.format != "coreml"):
            raise ExportConfigError(
                f"quantize={self.quantize!r} is only supported as 'int8' for the coreml format "
                f"(format is {self.format!r}); drop --quantize or use --format coreml"
            )
        if self.qat is not None and self.qat not in QAT_SCHEMES:
            raise ExportConfigError(
                f"unknown QAT scheme {self.qat!r}: choose one of {', '.join(QAT_SCHEMES)}"
            )
        if self.qat is not None and self.quantize is not None:
            raise ExportConfigError(
                f"the student was trained with QAT scheme {self.qat!r} and is exported with "
                f"its own scales; drop --quantize {self.quantize}"
            )
        if self.qat is not None and self.task != "sequence":
            raise ExportConfigError(
                "a QAT student exports for --for sequence only (its generation graphs are not "
                "built yet); export it without --for generation"
            )
        if self.opset < 18:
            raise ExportConfigError(
                f"opset {self.opset} is too old for torch.onnx dynamo export: use 18 or newer"
            )
        self._check_task()

    def _check_task(self) -> None:
        if self.task not in TASKS:
            raise ExportConfigError(
                f"unknown export task {self.task!r}: choose one of {', '.join(TASKS)}"
            )
        if self.task == "sequence" and self.max_length is not None:
            raise ExportConfigError("max_length applies to --for generation exports only")
        if self.task == "generation" and self.format not in GENERATION_FORMATS:
            raise ExportConfigError(
                f"--for generation supports {', '.join(GENERATION_FORMATS)}, not "
                f"{self.format!r} (see docs/guides/export.md, Known limits)"
            )
        if self.max_length is not None and self.max_length <= self.seq_lengths[-1]:
            raise ExportConfigError(
                f"max_length {self.max_length} must exceed the longest prefill length "
                f"{self.seq_lengths[-1]} (room for at least one new token)"
            )

    def input_shapes(self) -> list[list[int]]:
        """Return the enumerated ``[batch, seq]`` input shapes.

        >>> from kd_convert.spec import ExportSpec
        >>> ExportSpec("coreml", seq_lengths=(64, 128)).input_shapes()
        [[1, 64], [1, 128]]
        """
        return [[self.batch_size, n] for n in self.seq_lengths]


def check_sequence_length(length: int, allowed: tuple[int, ...] | list[int]) -> None:
    """Raise :class:`~kd_convert.errors.ValidationError` unless ``length`` is enumerated.

    The message names the nearest allowed length to pad to.

    >>> from kd_convert.spec import check_sequence_length
    >>> check_sequence_length(128, (64, 128))
    >>> try:
    ...     check_sequence_length(100, (64, 128))
    ... except ValueError:
    ...     pass
    ... except Exception as exc:
    ...     print(str(exc).split(": ")[-1])
    pad the input to 128
    """
    if length in allowed:
        return
    bigger = [n for n in sorted(allowed) if n >= length]
    advice = (
        f"pad the input to {bigger[0]}"
        if bigger
        else f"truncate the input to {max(allowed)} or re-export with a longer length"
    )
    raise ValidationError(
        f"sequence length {length} is not one of the enumerated lengths "
        f"{tuple(sorted(allowed))} of this export: {advice}"
    )
