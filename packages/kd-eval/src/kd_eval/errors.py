"""The exception hierarchy of kd-eval."""

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
