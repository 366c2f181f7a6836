"""The kd quality gates: small tools that read reports and compare them with ``qa/gates.toml``.

Nothing in the kd packages imports :mod:`qa`; the tools only read what the test, coverage,
mutation, security and benchmark runs write.
"""
