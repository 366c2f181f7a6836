"""kd-convert: export distilled students to TorchScript, torch.export, ONNX and Core ML.

>>> import kd_convert
>>> kd_convert.__version__.count(".")
2
"""

from kd_convert.errors import KDConvertError

__version__ = "0.1.0"

__all__ = ["KDConvertError", "__version__"]
