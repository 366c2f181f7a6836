"""Checks of the GitHub workflows in ``.github/workflows`` beyond what actionlint knows.

:mod:`qa.workflows.check` fails a workflow that lets a gate pass without running it
(``continue-on-error``, ``|| true``, a step or job whose ``if:`` can never hold) or that refers
to what does not exist (a ``matrix.X`` the matrix lacks, a ``needs:`` naming no job).
``nox -s workflows`` runs it after actionlint and zizmor.
"""
