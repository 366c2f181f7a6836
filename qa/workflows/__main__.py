"""``python -m qa.workflows [FOLDER]``: the local workflow check (``nox -s workflows``).

Exits 1 and prints one line per problem of the workflows in FOLDER (default
``.github/workflows``); see :mod:`qa.workflows.check`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from qa.workflows.check import check_folder

DEFAULT = Path(__file__).resolve().parents[2] / ".github" / "workflows"


def main(argv: list[str]) -> int:
    """Check the workflows of ``argv[0]`` (or the repository's); 0 when clean."""
    folder = Path(argv[0]) if argv else DEFAULT
    found = check_folder(folder)
    for line in found:
        print(line)
    print(f"workflows: {len(found)} problem(s) in {folder}")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
