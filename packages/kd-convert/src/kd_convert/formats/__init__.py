"""The export formats: one module each, looked up by name with :func:`format_module`.

>>> from kd_convert.formats import format_module
>>> format_module("onnx").ARTIFACT
'model.onnx'
"""

from __future__ import annotations

import importlib
from types import ModuleType

from kd_convert.errors import ExportConfigError
from kd_convert.spec import FORMATS


def format_module(name: str) -> ModuleType:
    """Return the module implementing format ``name`` (see :data:`kd_convert.spec.FORMATS`)."""
    if name not in FORMATS:
        raise ExportConfigError(
            f"unknown export format {name!r}: choose one of {', '.join(FORMATS)}"
        )
    return importlib.import_module(f"kd_convert.formats.{name}")
