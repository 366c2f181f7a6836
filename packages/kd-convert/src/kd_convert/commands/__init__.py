"""Subcommands of ``kd-convert``: one module per subcommand with ``register``."""
