"""Where a result came from: the installed package versions and the git commit.

The trainer writes both into every run manifest and ``kd-train version`` prints the
versions; this module sits below both, so neither imports the other for them.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
from collections.abc import Iterable
from pathlib import Path

#: The distributions whose versions :func:`installed_versions` reports, when installed.
REPORTED = ("kd-train", "kd-eval", "kd-convert", "torch", "transformers", "tokenizers")


def installed_versions(dists: Iterable[str] = REPORTED) -> dict[str, str]:
    """Return the installed version of each of ``dists`` (those not installed are left out).

    >>> from kd_train.provenance import installed_versions
    >>> "kd-train" in installed_versions()
    True
    """
    found = {}
    for dist in dists:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def git_commit(directory: Path) -> str | None:
    """The ``HEAD`` commit of the git work tree containing ``directory``, or ``None``."""
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None
