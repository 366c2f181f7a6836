"""``kd-eval version``: print the versions of the kd packages and their libraries."""

from kd_train.commands.version import register

__all__ = ["register"]
