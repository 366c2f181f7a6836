r"""Every mutant of a Python source file, found on its AST, and the code of each one.

A mutant is one small change at one place: an operator swapped (``+`` to ``-``, ``<`` to
``<=``, ``and`` to ``or``), a condition forced (``if c:`` to ``if True:``), a boolean
literal flipped, a ``not`` dropped. :func:`find` lists them in a fixed order (``ast.walk``),
so the index of a mutant in that list names it across processes; :func:`mutate` rebuilds
the tree and applies one of them.

Never mutated: annotations (never evaluated under ``from __future__ import annotations``),
docstrings and other strings, f-string formatting, ``if TYPE_CHECKING:`` blocks and the
``__main__`` guard.

>>> src = "def f(a, b):\n    return a + b if a < b else a\n"
>>> for m in find(src):
...     print(m.describe())
2:21 ConditionalExpression True
2:21 ConditionalExpression False
2:21 EqualityOperator <=
2:21 EqualityOperator >=
2:12 ArithmeticOperator -
>>> ns: dict[str, object] = {}
>>> exec(compile(mutate(src, 4), "<m>", "exec"), ns)
>>> ns["f"](2, 3)  # a - b
-1
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

#: operator class -> (mutator name, [(replacement class, replacement text)])
_BINOP: dict[type[ast.AST], list[tuple[type[ast.AST], str]]] = {
    ast.Add: [(ast.Sub, "-")],
    ast.Sub: [(ast.Add, "+")],
    ast.Mult: [(ast.Div, "/")],
    ast.Div: [(ast.Mult, "*")],
    ast.FloorDiv: [(ast.Mult, "*")],
    ast.Mod: [(ast.FloorDiv, "//")],
    ast.Pow: [(ast.Mult, "*")],
    ast.BitAnd: [(ast.BitOr, "|")],
    ast.BitOr: [(ast.BitAnd, "&")],
    ast.BitXor: [(ast.BitOr, "|")],
    ast.LShift: [(ast.RShift, ">>")],
    ast.RShift: [(ast.LShift, "<<")],
}
_CMP: dict[type[ast.AST], list[tuple[type[ast.AST], str]]] = {
    ast.Eq: [(ast.NotEq, "!=")],
    ast.NotEq: [(ast.Eq, "==")],
    ast.Lt: [(ast.LtE, "<="), (ast.GtE, ">=")],
    ast.LtE: [(ast.Lt, "<"), (ast.Gt, ">")],
    ast.Gt: [(ast.GtE, ">="), (ast.LtE, "<=")],
    ast.GtE: [(ast.Gt, ">"), (ast.Lt, "<")],
    ast.Is: [(ast.IsNot, "is not")],
    ast.IsNot: [(ast.Is, "is")],
    ast.In: [(ast.NotIn, "not in")],
    ast.NotIn: [(ast.In, "in")],
}
_BOOL: dict[type[ast.AST], list[tuple[type[ast.AST], str]]] = {
    ast.And: [(ast.Or, "or")],
    ast.Or: [(ast.And, "and")],
}
_AUG: dict[type[ast.AST], list[tuple[type[ast.AST], str]]] = {
    ast.Add: [(ast.Sub, "-=")],
    ast.Sub: [(ast.Add, "+=")],
    ast.Mult: [(ast.Div, "/=")],
    ast.Div: [(ast.Mult, "*=")],
}


@dataclass(frozen=True)
class Mutant:
    """One mutant of one file: where it is, what it changes, and its index in :func:`find`.

    Lines and columns start at 1 (the mutation-testing-report-schema's convention); ``end``
    is exclusive. ``function`` is the dotted qualified name of the innermost function whose
    body holds the mutant (``""`` when it runs at import time: a module or class body, a
    default value, a decorator).
    """

    index: int
    mutator: str
    replacement: str
    line: int
    column: int
    end_line: int
    end_column: int
    function: str
    function_line: int

    @property
    def static(self) -> bool:
        """True when the mutant runs at import time (no function body holds it)."""
        return not self.function

    def describe(self) -> str:
        """``line:column mutator replacement``."""
        return f"{self.line}:{self.column} {self.mutator} {self.replacement}"


Apply = Callable[[], None]


@dataclass
class _Candidate:
    node: ast.expr | ast.stmt
    mutator: str
    replacement: str
    apply: Apply


def _set(obj: object, attr: str, value: object) -> Apply:
    def apply() -> None:
        setattr(obj, attr, value)

    return apply


def _set_item(seq: list[Any], i: int, value: ast.AST) -> Apply:
    def apply() -> None:
        seq[i] = value

    return apply


def _const(node: ast.AST, value: bool) -> ast.Constant:
    return ast.copy_location(ast.Constant(value=value), node)


def _skipped(tree: ast.Module) -> set[int]:
    """Ids of the nodes never mutated: annotations, docstrings, f-strings, guarded blocks."""
    out: set[int] = set()

    def drop(node: ast.AST | None) -> None:
        if node is not None:
            out.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
                drop(None if arg is None else arg.annotation)
            drop(node.returns)
        elif isinstance(node, ast.AnnAssign):
            drop(node.annotation)
        elif isinstance(node, ast.JoinedStr) or (isinstance(node, ast.If) and _guard(node.test)):
            drop(node)
    return out


def _guard(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` / ``typing.TYPE_CHECKING`` or ``__name__ == "__main__"``."""
    text = ast.unparse(test)
    return text in ("TYPE_CHECKING", "typing.TYPE_CHECKING") or text.startswith("__name__ ==")


def _candidates(tree: ast.Module) -> Iterator[_Candidate]:
    skipped = _skipped(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        yield from _of(node)


def _of(node: ast.AST) -> Iterator[_Candidate]:
    if isinstance(node, ast.If | ast.IfExp):
        test = node.test
        yield _Candidate(
            test, "ConditionalExpression", "True", _set(node, "test", _const(test, True))
        )
        yield _Candidate(
            test, "ConditionalExpression", "False", _set(node, "test", _const(test, False))
        )
    elif isinstance(node, ast.While):
        test = node.test
        yield _Candidate(
            test, "ConditionalExpression", "False", _set(node, "test", _const(test, False))
        )
    elif isinstance(node, ast.BinOp):
        for new, text in _BINOP.get(type(node.op), []):
            name = "ArithmeticOperator" if text in "+-*/ // *" else "BitwiseOperator"
            yield _Candidate(node, name, text, _set(node, "op", new()))
    elif isinstance(node, ast.AugAssign):
        for new, text in _AUG.get(type(node.op), []):
            yield _Candidate(node, "AssignmentOperator", text, _set(node, "op", new()))
    elif isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            for new, text in _CMP.get(type(op), []):
                yield _Candidate(node, "EqualityOperator", text, _set_item(node.ops, i, new()))
    elif isinstance(node, ast.BoolOp):
        for new, text in _BOOL.get(type(node.op), []):
            yield _Candidate(node, "LogicalOperator", text, _set(node, "op", new()))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub):
        # ``not x`` -> ``x`` (``-x`` -> ``x``): the operand stands alone; UAdd is a no-op
        yield _Candidate(node, "UnaryOperator", "removed", _set(node, "op", ast.UAdd()))
    elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
        flipped = not node.value
        yield _Candidate(node, "BooleanLiteral", str(flipped), _set(node, "value", flipped))


def _columns(lines: list[str], line: int, byte_col: int) -> int:
    """A 1-based character column from ast's 0-based UTF-8 byte offset."""
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    return len(text.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore")) + 1


def _functions(tree: ast.Module) -> dict[int, tuple[str, int]]:
    """id(node) -> (qualified name, first line) of the innermost function body holding it.

    ``("", 0)`` for a node that runs at import time. Names and lines are CPython's
    ``co_qualname`` and ``co_firstlineno`` (a decorated function starts at its first
    decorator), so the live function object can be found from them.
    """
    out: dict[int, tuple[str, int]] = {}
    static = ("", 0)

    def walk(node: ast.AST, prefix: str, owner: tuple[str, int]) -> None:
        for child in ast.iter_child_nodes(node):
            out[id(child)] = owner
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                first = child.decorator_list[0].lineno if child.decorator_list else child.lineno
                inner = (f"{prefix}{child.name}", first)
                for part in (*child.decorator_list, child.args, child.returns):
                    if part is not None:
                        out[id(part)] = owner
                        walk(part, prefix, owner)
                for stmt in child.body:
                    out[id(stmt)] = inner
                    walk(stmt, f"{inner[0]}.<locals>.", inner)
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.", owner)
            elif isinstance(child, ast.Lambda):
                inner = (f"{prefix}<lambda>", child.lineno)
                out[id(child.args)] = owner
                walk(child.args, prefix, owner)
                out[id(child.body)] = inner
                walk(child.body, f"{inner[0]}.<locals>.", inner)
            else:
                walk(child, prefix, owner)

    walk(tree, "", static)
    return out


def _build(source: str) -> tuple[ast.Module, list[_Candidate]]:
    tree = ast.parse(source)
    return tree, list(_candidates(tree))


def find(source: str) -> list[Mutant]:
    """Every mutant of ``source``, in a fixed order."""
    tree, found = _build(source)
    owners = _functions(tree)
    lines = source.splitlines()
    out = []
    for i, c in enumerate(found):
        node = c.node
        line, end_line = node.lineno, node.end_lineno or node.lineno
        func, first = owners.get(id(node), ("", 0))
        out.append(
            Mutant(
                index=i,
                mutator=c.mutator,
                replacement=c.replacement,
                line=line,
                column=_columns(lines, line, node.col_offset),
                end_line=end_line,
                end_column=_columns(lines, end_line, node.end_col_offset or 0),
                function=func,
                function_line=first,
            )
        )
    return out


def mutate(source: str, index: int) -> ast.Module:
    """The tree of ``source`` with mutant ``index`` (of :func:`find`) applied."""
    tree, found = _build(source)
    found[index].apply()
    return ast.fix_missing_locations(tree)
