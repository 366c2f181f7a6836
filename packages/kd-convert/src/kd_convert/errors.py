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
    input that breaks the export's contract (dtype, rank, batch, a length outside the
    enumerated set or beyond the positions the export holds).
    """


class ConversionError(KDConvertError):
    """The exporter itself (torch.jit, torch.export, torch.onnx, coremltools) failed."""


class ContractError(KDConvertError):
    """An export does not match its ``contract.json`` (or the contract is missing/invalid)."""


class UntrustedArtifactError(KDConvertError):
    """An artifact would be unpickled (TorchScript, ``torch.export``) and trust was not given.

    Pass ``--trust-artifact`` (``trust_artifact=True``) only for an export you made or got
    from someone you trust; an archive holding more than tensors is refused even then.
    """
