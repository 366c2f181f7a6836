"""The exception hierarchy of kd-convert.

Every error says what was wrong, where, and what to do; the command line prints it without a
traceback (see :mod:`kd_train.cliutil`).
"""

from kd_train.errors import KDTrainError


class KDConvertError(KDTrainError):
    """Base class of every error kd-convert raises on purpose.

    >>> from kd_convert.errors import KDConvertError
    >>> from kd_train.errors import KDTrainError
    >>> issubclass(KDConvertError, KDTrainError)
    True
    """


class ExportConfigError(KDConvertError):
    """An export setting is invalid (unknown format, bad sequence lengths, ...)."""


class UnsupportedModelError(KDConvertError):
    """The model is not a causal LM the export wrapper knows how to drive."""


class ValidationError(KDConvertError):
    """A pre-conversion check failed.

    Causes: int64 on an attention path, an op the target lacks, dynamic control flow, or an
    input shape outside the enumerated set.
    """


class ConversionError(KDConvertError):
    """The exporter itself (torch.jit, torch.export, torch.onnx, coremltools) failed."""


class ContractError(KDConvertError):
    """An export does not match its ``contract.json`` (or the contract is missing/invalid)."""
