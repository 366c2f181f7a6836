"""The exception hierarchy of kd-train.

Every error the package raises on purpose derives from :class:`KDTrainError`, so a caller
(and the command line) can tell a problem with the input from a bug.
"""


class KDTrainError(Exception):
    """Base class of every error kd-train raises on purpose.

    The message says what was wrong, where, and what to do about it.

    >>> from kd_train.errors import KDTrainError
    >>> str(KDTrainError("bad config: key 'lr' must be > 0"))
    "bad config: key 'lr' must be > 0"
    """
