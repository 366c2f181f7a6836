"""Run mutatest 3.1.0's command line with two fixes; run it with mutatest's own Python.

1. Python 3.11 removed ``random.sample`` on sets; mutatest calls it on the set of candidate
   mutations of a location (``mutatest/run.py``). The set is sorted first (by ``repr``: the
   members are AST classes, constants and strings).
2. Sets iterate in hash order, which changes between processes; with the sort and a fixed
   seed (``--rseed`` is filled in when absent) the same code and tests give the same mutants.

Usage: ``python qa/mutation/shim.py [mutatest arguments]``. Only the standard library and
mutatest are imported, so the shim runs in mutatest's virtualenv (it pins coverage<6).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from typing import Any

DEFAULT_SEED = 20260101


class SortedSampleRandom(random.Random):
    """A ``random.Random`` whose ``sample`` accepts sets and draws from them in sorted order.

    >>> rng = SortedSampleRandom(1)
    >>> a = rng.sample({"b", "a", "c"}, k=3)
    >>> rng.seed(1)
    >>> a == rng.sample({"c", "a", "b"}, k=3)
    True
    """

    def sample(self, population: Any, k: int, *, counts: Any = None) -> list[Any]:
        """Like :meth:`random.Random.sample`; sets are sorted by ``repr`` first."""
        if isinstance(population, set | frozenset):
            population = sorted(population, key=repr)
        return super().sample(population, k, counts=counts)


def with_seed(argv: Sequence[str], seed: int = DEFAULT_SEED) -> list[str]:
    """Add ``--rseed`` unless the arguments already give a seed.

    >>> with_seed(["-s", "src"], 7)
    ['-s', 'src', '--rseed', '7']
    >>> with_seed(["-r", "3"])
    ['-r', '3']
    """
    given = any(a in ("-r", "--rseed") or a.startswith("--rseed=") for a in argv)
    return list(argv) if given else [*argv, "--rseed", str(seed)]


def patch() -> None:
    """Replace the ``random`` module that ``mutatest.run`` uses with the sorted sampler."""
    import mutatest.run

    mutatest.run.random = SortedSampleRandom(DEFAULT_SEED)


def main(argv: Sequence[str]) -> None:
    """Patch mutatest, then run its command line on ``argv``."""
    patch()
    from mutatest.cli import cli_main

    sys.argv = ["mutatest", *with_seed(argv)]
    cli_main()


if __name__ == "__main__":
    main(sys.argv[1:])
