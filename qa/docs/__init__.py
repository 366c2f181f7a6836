"""Docs gate: the Sphinx site builds with ``-W -n`` and its doctests pass (see __main__)."""
