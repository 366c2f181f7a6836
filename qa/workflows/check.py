"""Read workflow YAML and name every way a gating job can pass without doing its work.

Every job counts as gating: a job that should not gate a merge is not one a workflow here
needs. Each problem is one line, ``FILE: jobs.<job>[.steps[i]]: what``:

>>> wf = {"on": "pull_request", "jobs": {"t": {"runs-on": "x", "continue-on-error": True,
...       "steps": [{"run": "pytest || true"}]}}}
>>> for p in problems(wf, "pr.yml"):
...     print(p)
pr.yml: jobs.t: continue-on-error lets the job fail and the workflow pass
pr.yml: jobs.t.steps[0]: '|| true' hides the command's failure
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

#: Shell that turns a failing command into a passing step.
SWALLOW = re.compile(
    r"\|\|\s*(?:true\b|:(?=\s|$|;|\))|exit\s+0\b)|^\s*set\s+\+e\b|\bset\s+\+o\s+errexit\b", re.M
)
_EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.S)
_CONTEXT_REF = re.compile(r"(?<![\w.'\"-])(matrix|needs|steps)\.([A-Za-z_][\w-]*)")
_CONTEXTS = {
    "github", "env", "vars", "job", "jobs", "steps", "runner", "secrets", "strategy",
    "matrix", "needs", "inputs",
}  # fmt: skip
_FUNCTIONS = {
    "always", "success", "failure", "cancelled", "contains", "startsWith", "endsWith",
    "format", "join", "toJSON", "fromJSON", "hashFiles",
}  # fmt: skip
_LITERALS = {"true", "false", "null"}
_FALSY = {"false", "0", "''", '""', "null", "!true", "!always()"}


def load(path: Path) -> dict[str, Any]:
    """Parse one workflow file (YAML 1.1 reads the key ``on`` as True: it is put back)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a workflow (a mapping at the top)")
    if True in data:
        data["on"] = data.pop(True)
    return data


def _strings(node: Any, where: str) -> Iterator[tuple[str, str]]:
    """Yield (path, string) for every string below ``node``."""
    if isinstance(node, str):
        yield where, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{where}[{i}]")


def _expressions(text: str, bare: bool) -> list[str]:
    """The expressions in ``text`` (an ``if:`` is one expression even without ``${{ }}``)."""
    found = _EXPR.findall(text)
    if bare and not found:
        found = [text]
    return [e.strip() for e in found]


def _strip_strings(expr: str) -> str:
    return re.sub(r"'(?:[^']|'')*'", "''", expr)


def syntax_problem(expr: str) -> str | None:
    """Name what is wrong with an expression's shape, or None.

    >>> syntax_problem("matrix.session == 'tests'") is None
    True
    >>> syntax_problem("matrix.session = 'tests'")
    "'=' is no operator (compare with '==')"
    >>> syntax_problem("(github.event_name == 'push'")
    'unbalanced parentheses'
    >>> syntax_problem("sucess()")
    "unknown function 'sucess'"
    """
    if expr.count("'") % 2:
        return "unterminated string"
    bare = _strip_strings(expr)
    if re.search(r"(?<![=!<>])=(?!=)", bare):
        return "'=' is no operator (compare with '==')"
    depth = 0
    for ch in bare:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            break
    if depth:
        return "unbalanced parentheses"
    for name in re.findall(r"([A-Za-z_][\w-]*)\s*\(", bare):
        if name not in _FUNCTIONS:
            return f"unknown function '{name}'"
    for name in re.findall(r"(?<![\w.-])([A-Za-z_][\w-]*)(?![\w-])(?!\s*\()", bare):
        if name not in _CONTEXTS and name not in _LITERALS:
            return f"unknown name '{name}'"
    return None


def never_runs(condition: Any) -> bool:
    """True for an ``if:`` that cannot hold (false, 0, an empty string, ``x && false``).

    >>> [never_runs(c) for c in (False, "false", "${{ false }}", "always() && false", "0")]
    [True, True, True, True, True]
    >>> [never_runs(c) for c in (True, "always()", "matrix.session == 'tests'", "'a' == 'a'")]
    [False, False, False, False]
    >>> never_runs("'push' == 'pull_request'")
    True
    """
    if isinstance(condition, bool | int | float):
        return not condition
    if condition is None:
        return False
    for expr in _expressions(str(condition), bare=True):
        e = " ".join(expr.split())
        if e in _FALSY:
            return True
        parts = [p.strip() for p in re.split(r"&&", e)]
        if any(p in _FALSY for p in parts):
            return True
        lit = re.fullmatch(r"('[^']*')\s*(==|!=)\s*('[^']*')", e)
        if lit:
            same = lit.group(1).lower() == lit.group(3).lower()
            return same != (lit.group(2) == "==")
    return False


def _matrix_keys(job: dict[str, Any]) -> set[str] | None:
    matrix = (job.get("strategy") or {}).get("matrix")
    if matrix is None:
        return None
    if isinstance(matrix, str):  # ${{ fromJSON(...) }}: its keys are not known here
        return {"*"}
    keys = {k for k in matrix if k not in ("include", "exclude")}
    for entry in matrix.get("include") or []:
        if isinstance(entry, dict):
            keys |= set(entry)
    return keys


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _job_problems(name: str, job: dict[str, Any], jobs: dict[str, Any]) -> Iterator[str]:
    where = f"jobs.{name}"
    if job.get("continue-on-error", False) is not False:
        yield f"{where}: continue-on-error lets the job fail and the workflow pass"
    if "if" in job and never_runs(job["if"]):
        yield f"{where}: if: {job['if']!r} never holds: the job is always skipped"
    needs = _as_list(job.get("needs"))
    for need in needs:
        if need not in jobs:
            yield f"{where}: needs: {need!r} is no job of this workflow ({', '.join(jobs)})"
    matrix = _matrix_keys(job)
    step_ids: list[str] = []
    for i, step in enumerate(job.get("steps") or []):
        at = f"{where}.steps[{i}]"
        if not isinstance(step, dict):
            continue
        if step.get("continue-on-error", False) is not False:
            yield f"{at}: continue-on-error lets the step fail and the job pass"
        if "if" in step and never_runs(step["if"]):
            yield f"{at}: if: {step['if']!r} never holds: the step is always skipped"
        for m in SWALLOW.finditer(str(step.get("run", ""))):
            yield f"{at}: '{m.group(0).strip()}' hides the command's failure"
        yield from _refs(at, step, matrix, needs, step_ids)
        if "id" in step:
            step_ids.append(str(step["id"]))
    rest = {k: v for k, v in job.items() if k != "steps"}
    yield from _refs(where, rest, matrix, needs, step_ids)


def _refs(
    where: str, node: Any, matrix: set[str] | None, needs: list[str], step_ids: list[str]
) -> Iterator[str]:
    """Name every expression that is malformed or refers to what does not exist."""
    for path, text in _strings(node, where):
        bare = path.endswith(".if")
        for expr in _expressions(text, bare):
            problem = syntax_problem(expr)
            if problem:
                yield f"{path}: {problem} in {expr!r}"
            for ctx, key in _CONTEXT_REF.findall(_strip_strings(expr)):
                if ctx == "matrix" and matrix is None:
                    yield f"{path}: matrix.{key}: the job has no strategy.matrix"
                elif ctx == "matrix" and matrix and "*" not in matrix and key not in matrix:
                    yield f"{path}: matrix.{key} is not in the matrix ({', '.join(sorted(matrix))})"
                elif ctx == "needs" and key not in needs:
                    yield f"{path}: needs.{key}: the job does not need {key!r}"
                elif ctx == "steps" and key not in step_ids:
                    yield f"{path}: steps.{key}: no earlier step has id {key!r}"


def problems(workflow: dict[str, Any], name: str) -> list[str]:
    """Every problem of one parsed workflow, each prefixed with ``name``."""
    jobs = workflow.get("jobs")
    if not isinstance(jobs, dict) or not jobs:
        return [f"{name}: no jobs"]
    out = []
    for job_name, job in jobs.items():
        if isinstance(job, dict):
            out += [f"{name}: {p}" for p in _job_problems(str(job_name), job, jobs)]
    return out


def check_folder(folder: Path) -> list[str]:
    """Every problem of every ``*.yml`` / ``*.yaml`` workflow in ``folder``."""
    files = sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")])
    if not files:
        return [f"{folder}: no workflow files"]
    out = []
    for path in files:
        try:
            out += problems(load(path), path.as_posix())
        except (OSError, ValueError, yaml.YAMLError) as exc:
            out.append(f"{path.as_posix()}: cannot read: {exc}")
    return out
