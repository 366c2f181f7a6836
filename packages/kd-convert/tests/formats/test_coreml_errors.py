"""A coremltools failure reaches the user as a ConversionError naming what failed."""

import pytest

pytest.importorskip("coremltools")

from kd_convert.errors import ConversionError
from kd_convert.formats import coreml


@pytest.mark.parametrize("what", ["the model", "the stateful model"])
def test_a_coremltools_failure_is_a_conversion_error_naming_what(monkeypatch, what):
    ct = coreml._coremltools()

    def refuse(*args, **kwargs):
        raise NotImplementedError("op 'aten::frobnicate' is not supported")

    monkeypatch.setattr(ct, "convert", refuse)
    pattern = rf"could not convert {what}: NotImplementedError: op 'aten::frobnicate'"
    with pytest.raises(ConversionError, match=pattern):
        coreml._convert(what, program=None, inputs=[])
