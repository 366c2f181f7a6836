"""kd-eval: fidelity, task metrics, performance benchmarks and reports for distilled students.

>>> import kd_eval
>>> kd_eval.__version__.count(".")
2
"""

from kd_eval.errors import KDEvalError

__version__ = "0.1.0"

__all__ = ["KDEvalError", "__version__"]
