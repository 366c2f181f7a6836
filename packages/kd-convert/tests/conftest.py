"""Shared exports: each format is exported once per session from the tiny GQA Llama."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from kd_convert.pipeline import ExportResult, export_model
from kd_convert.spec import ExportSpec

LENGTHS = (8, 16)


@pytest.fixture(scope="session")
def export_once(
    tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], ExportResult]:
    """Return ``export(fmt)``: the session's export of the tiny student in ``fmt``."""
    done: dict[str, ExportResult] = {}

    def export(fmt: str) -> ExportResult:
        if fmt not in done:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = tmp_path_factory.mktemp(f"export-{fmt}")
                done[fmt] = export_model(tiny_llama_dir, out, ExportSpec(fmt, LENGTHS))
        return done[fmt]

    return export
