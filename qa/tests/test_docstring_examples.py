import doctest
import importlib

import pytest

MODULES = [
    "qa.gates",
    "qa.summary",
    "qa.coverage.gate",
    "qa.mutation.report",
    "qa.mutation.shim",
    "qa.mutation.__main__",
    "qa.mutation.changes",
    "qa.mutation.html_report",
    "qa.mutation.legacy",
    "qa.mutation.mutants",
    "qa.mutation.stryker",
    "qa.security.findings",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_of_the_qa_tools_hold(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0, f"{name} has no example"
    assert result.failed == 0
