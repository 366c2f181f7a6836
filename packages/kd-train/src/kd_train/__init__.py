"""kd-train: the training core of kd.

It holds the KD dataset schema and its validation, the teacher sources, the distillation
losses and the trainer. The version below is the single source of the package version.

>>> import kd_train
>>> kd_train.__version__.count(".")
2
"""

from kd_train.errors import KDTrainError

__version__ = "0.1.0"

__all__ = ["KDTrainError", "__version__"]
