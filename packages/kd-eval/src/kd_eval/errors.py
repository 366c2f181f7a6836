"""The exception hierarchy of kd-eval.

Every error says what was wrong, where (a path, a line, a field) and what to do about it;
the ``kd-eval`` command line prints it on one line and exits with status 2.
"""

from kd_train.errors import KDTrainError


class KDEvalError(KDTrainError):
    """Base class of every error kd-eval raises on purpose.

    It derives from :class:`kd_train.errors.KDTrainError` so one ``except`` clause catches
    the input errors of the whole toolchain.

    >>> from kd_eval.errors import KDEvalError
    >>> from kd_train.errors import KDTrainError
    >>> issubclass(KDEvalError, KDTrainError)
    True
    """


class ModelLoadError(KDEvalError):
    """A model directory is missing, unreadable, or its model and tokenizer disagree."""


class VocabularyMismatchError(KDEvalError):
    """Teacher and student (or a model and its tokenizer) use different vocabularies."""


class EvalDataError(KDEvalError):
    """An evaluation set is missing, empty, or holds a malformed row (named by file:line)."""


class ConfigError(KDEvalError):
    """A targets file, fixture file, baseline or report given as input is invalid."""


class MetricInputError(KDEvalError, ValueError):
    """A metric was given input it has no value for: no examples, no tokens, a NaN.

    Each metric's docstring says which degenerate inputs have a defined value and which are
    refused with this error. It is a :class:`ValueError` too, as the metrics raised before.
    """


class BenchError(KDEvalError):
    """A benchmark cannot run: unsupported model file, bad shapes or settings."""
