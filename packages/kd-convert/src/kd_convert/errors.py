"""The exception hierarchy of kd-convert."""

from kd_train.errors import KDTrainError


class KDConvertError(KDTrainError):
    """Base class of every error kd-convert raises on purpose.

    >>> from kd_convert.errors import KDConvertError
    >>> from kd_train.errors import KDTrainError
    >>> issubclass(KDConvertError, KDTrainError)
    True
    """
