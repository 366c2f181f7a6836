"""``python -m qa all``: run every gate and print a summary; fails until the gates exist."""

import sys

if __name__ == "__main__":
    print("qa: the combined gate runner is not built yet", file=sys.stderr)
    raise SystemExit(1)
