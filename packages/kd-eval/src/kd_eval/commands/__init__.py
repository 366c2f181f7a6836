"""Subcommands of ``kd-eval``: one module per subcommand with ``register``."""
