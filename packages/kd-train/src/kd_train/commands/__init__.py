"""Subcommands of ``kd-train``: one module per subcommand with ``register``."""
