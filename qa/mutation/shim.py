"""Run mutatest 3.1.0's command line with two fixes; run it with mutatest's own Python.

1. Python 3.11 removed ``random.sample`` on sets; mutatest calls it on the set of candidate
   mutations of a location (``mutatest/run.py``). The set is sorted first (by ``repr``: the
   members are AST classes, constants and strings).
2. Sets iterate in hash order, which changes between processes; with the sort and a fixed
   seed (``--rseed`` is filled in when absent) the same code and tests give the same mutants.
3. mutatest also mutates type annotations (``-> None`` to ``-> True``, ``int | None`` to
   ``int & None``). Under ``from __future__ import annotations`` those are never evaluated:
   no test can catch them, and they only dilute the score. Locations inside an annotation
   are dropped from the sample space.

Usage: ``python qa/mutation/shim.py [mutatest arguments]``. Only the standard library and
mutatest are imported, so the shim runs in mutatest's virtualenv (it pins coverage<6).
"""

from __future__ import annotations

import ast
import random
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
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


Span = tuple[int, int, int, int]


def annotation_spans(source: str) -> list[Span]:
    r"""(line, col, end line, end col) of every annotation in ``source``.

    >>> annotation_spans("def f(a: int | None = None) -> None:\n    x: bool = True\n")
    [(1, 9, 1, 19), (1, 31, 1, 35), (2, 7, 2, 11)]
    """
    nodes: list[ast.expr] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            args = [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]
            nodes += [x.annotation for x in args if x is not None and x.annotation is not None]
            nodes += [node.returns] if node.returns is not None else []
        elif isinstance(node, ast.AnnAssign):
            nodes.append(node.annotation)
    return sorted(
        (n.lineno, n.col_offset, n.end_lineno or n.lineno, n.end_col_offset or 0) for n in nodes
    )


def in_spans(line: int, col: int, spans: Iterable[Span]) -> bool:
    """True when position (line, col) lies inside one of ``spans``.

    >>> in_spans(1, 31, [(1, 31, 1, 35)]), in_spans(1, 36, [(1, 31, 1, 35)])
    (True, False)
    """
    return any((l0, c0) <= (line, col) < (l1, c1) for l0, c0, l1, c1 in spans)


def drop_annotations(targets: list[Any]) -> list[Any]:
    """Keep the mutatest targets (``source_path``, ``loc_idx``) that are not annotations."""
    cache: dict[Path, list[Span]] = {}
    kept = []
    for t in targets:
        path = Path(t.source_path)
        if path not in cache:
            cache[path] = annotation_spans(path.read_text(encoding="utf-8"))
        if not in_spans(t.loc_idx.lineno, t.loc_idx.col_offset, cache[path]):
            kept.append(t)
    return kept


def patch() -> None:
    """Patch ``mutatest.run``: the sorted, seeded sampler and no annotation targets."""
    import mutatest.run

    mutatest.run.random = SortedSampleRandom(DEFAULT_SEED)
    original = mutatest.run.get_sample

    def get_sample(ggrp: Any, ignore_coverage: bool) -> list[Any]:
        return drop_annotations(original(ggrp, ignore_coverage))

    mutatest.run.get_sample = get_sample


def main(argv: Sequence[str]) -> None:
    """Patch mutatest, then run its command line on ``argv``."""
    patch()
    from mutatest.cli import cli_main

    sys.argv = ["mutatest", *with_seed(argv)]
    cli_main()


if __name__ == "__main__":
    main(sys.argv[1:])
