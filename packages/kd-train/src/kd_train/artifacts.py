"""Opening exported models: what may be read without trust, and what goes into a runtime.

Two checks shared by every command that opens an export (``kd-convert verify``, its parity
and generate runners, ``kd-eval bench``):

* **Trust.** TorchScript (``.ts``/``.pt``) and ``torch.export`` (``.pt2``) archives are
  loaded through pickle, and unpickling runs whatever code the file's author put in it. The
  SHA-256 list of ``contract.json`` is no defence: whoever writes the artifact writes the
  contract. Such a file is opened only when the caller passes :data:`TRUST_FLAG` (or
  ``trust_artifact=True``); :func:`untrusted_message` is the refusal every package raises.
  :func:`archive_problems` reads a zip archive with ``zipfile`` and ``pickletools``
  (which decode, never execute) and lists what kd's exporters never write: a pickle that
  imports anything beyond torch's tensor rebuilders, a ``use_pickle`` weights or constants
  entry, a compiled library, a legacy pickled weights file.
* **Inputs.** :func:`contract_inputs` reads the inputs a graph accepts from the contract's
  JSON; :func:`input_problems` compares arrays with them (dtype, rank, fixed axes such as the
  batch, enumerated lengths, and the most positions a dynamic axis may hold) before any
  runtime sees them::

      axis fixed at n        ->  size must be n
      axis enumerated {a, b} ->  size must be one of them (the lengths parity proved)
      axis dynamic (None)    ->  1 <= size <= max_length (the export's positions)

>>> import numpy as np
>>> from kd_train.artifacts import InputSpec, input_problems
>>> spec = InputSpec("input_ids", "int32", ((1, 8), (1, 16)))
>>> input_problems([spec], [np.zeros((1, 16), np.int32)])
[]
>>> input_problems([spec], [np.zeros((1, 600), np.int32)])  # doctest: +NORMALIZE_WHITESPACE
["input 'input_ids' has length 600 on axis 1; the export accepts only 8, 16:
  pad or truncate it to one of them"]
"""

from __future__ import annotations

import io
import json
import pickletools
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The command-line flag that lets a pickled artifact load.
TRUST_FLAG = "--trust-artifact"
#: Globals a pickle inside a genuine TorchScript or ``torch.export`` archive imports
#: (``module``, ``name``; ``"*"`` allows every name of the module), a subset of what
#: ``torch.load(weights_only=True)`` allows, plus TorchScript's list builders. TorchScript's own
#: classes (``__torch__.*``) are resolved by TorchScript, not imported from Python.
SAFE_GLOBALS = frozenset(
    {
        ("collections", "OrderedDict"),
        ("torch", "Size"),
        ("torch", "Tensor"),
        ("torch._tensor", "_rebuild_from_type_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_tensor"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch.jit._pickle", "*"),
    }
)
_PICKLE_SUFFIXES = (".pkl", ".debug_pkl")
_ZIP_MAGIC = b"PK\x03\x04"


def untrusted_message(path: str | Path, kind: str) -> str:
    """Return the refusal to load ``path`` (a ``kind`` archive) without trust.

    >>> from kd_train.artifacts import untrusted_message
    >>> untrusted_message("out/model.pt2", "torch.export archive").split(";")[0]
    'out/model.pt2 is a torch.export archive, loaded through pickle'
    """
    return (
        f"{path} is a {kind}, loaded through pickle; unpickling runs any code its author put "
        f"in it, and contract.json's hashes cannot tell (whoever wrote the file wrote them): "
        f"pass {TRUST_FLAG} (trust_artifact=True in Python) only for an export you made or "
        "got from someone you trust"
    )


def archive_problems(path: str | Path) -> list[str]:
    """List what in the zip archive at ``path`` would unpickle more than tensors.

    Reads member names, the ``torch.export`` payload configs (JSON) and the opcodes of every
    pickle (``pickletools.genops`` decodes without executing), including those of an
    archive nested one level down (``torch.export``'s sample inputs). An empty list means the
    archive holds nothing kd's exporters would not write; loading it still needs trust.
    """
    target = Path(path)
    try:
        with zipfile.ZipFile(target) as archive:
            return [f"{target}: {problem}" for problem in _zip_problems(archive, depth=0)]
    except (zipfile.BadZipFile, OSError) as exc:
        return [f"{target} is not a readable zip archive ({exc})"]


def _zip_problems(archive: zipfile.ZipFile, depth: int) -> list[str]:
    problems: list[str] = []
    for name in archive.namelist():
        parts = name.split("/")
        if "aotinductor" in parts:
            problems.append(f"{name} is a compiled library (AOTInductor); kd never exports one")
            continue
        data = archive.read(name)
        if name.endswith(_PICKLE_SUFFIXES):
            problems += [f"{name} {p}" for p in pickle_problems(data)]
        elif name.endswith("_config.json"):
            problems += [f"{name} {p}" for p in _payload_config_problems(data)]
        elif data.startswith(_ZIP_MAGIC) and depth == 0:
            with zipfile.ZipFile(io.BytesIO(data)) as inner:
                problems += [f"{name}: {p}" for p in _zip_problems(inner, depth + 1)]
        elif name.endswith(".pt"):  # torch.save's legacy format: a raw stream of pickles
            problems.append(f"{name} is a raw pickle (legacy torch.save); kd never exports one")
    return problems


def _payload_config_problems(data: bytes) -> list[str]:
    """``torch.export`` payload configs: every entry must be raw tensor bytes."""
    try:
        config = json.loads(data).get("config", {})
    except (ValueError, AttributeError):
        return ["is not a JSON payload config"]
    problems = []
    for key, entry in config.items():
        if not isinstance(entry, dict):
            problems.append(f"entry {key!r} is not an object")
        elif entry.get("use_pickle") is not False:
            problems.append(f"marks {key!r} use_pickle (it would be unpickled)")
        elif not str(entry.get("path_name", "")).startswith(("weight_", "tensor_")):
            problems.append(f"entry {key!r} is a pickled object {entry.get('path_name')!r}")
    return problems


def pickle_problems(data: bytes) -> list[str]:
    """List the imports in the pickle ``data`` beyond :data:`SAFE_GLOBALS`, without running it.

    >>> import pickle, collections
    >>> from kd_train.artifacts import pickle_problems
    >>> pickle_problems(pickle.dumps(collections.OrderedDict(), protocol=2))
    []
    >>> pickle_problems(pickle.dumps(print, protocol=4))
    ['imports builtins.print']
    """
    try:
        found = list(_globals(data))
    except Exception as exc:  # pickletools raises ValueError and others on garbage
        return [f"is not a pickle kd can read ({type(exc).__name__}: {exc})"]
    return [f"imports {name}" for name in dict.fromkeys(found) if not _safe(name)]


def _safe(name: str) -> bool:
    module, _, attr = name.rpartition(".")
    return (
        module.startswith("__torch__")
        or (module, attr) in SAFE_GLOBALS
        or (module, "*") in SAFE_GLOBALS
        or (module == "torch" and attr.endswith("Storage"))
    )


def _globals(data: bytes) -> Iterator[str]:
    """Yield ``module.name`` of every global the pickle imports (``?`` when unresolvable)."""
    strings: list[Any] = []  # the values pushed so far, strings where known
    memo: dict[int, Any] = {}
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("GLOBAL", "INST"):
            yield ".".join(str(arg).split(" ", 1))
        elif op.name == "STACK_GLOBAL":
            pair = strings[-2:] if len(strings) >= 2 else [None, None]
            ok = all(isinstance(part, str) for part in pair)
            yield ".".join(map(str, pair)) if ok else "?.? (a global kd cannot resolve)"
        elif op.name in ("EXT1", "EXT2", "EXT4"):
            yield f"copyreg.extension_{arg}"
        elif "UNICODE" in op.name or "STRING" in op.name:
            strings.append(arg)
        elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(str(arg))] = strings[-1] if strings else None
        elif op.name == "MEMOIZE":
            memo[len(memo)] = strings[-1] if strings else None
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            strings.append(memo.get(int(str(arg))))
        elif op.name not in ("FRAME", "PROTO"):
            strings.append(None)


@dataclass(frozen=True)
class InputSpec:
    """One input of an exported graph, as its contract lists it.

    ``shapes`` are the accepted shapes (``None``: a dynamic axis); ``max_length`` bounds each
    dynamic axis (the positions the export holds; ``None``: no bound recorded).
    """

    name: str
    dtype: str
    shapes: tuple[tuple[int | None, ...], ...]
    max_length: int | None = None


def contract_inputs(contract: Mapping[str, Any], artifact: str) -> list[InputSpec]:
    """Return the inputs ``contract.json`` (parsed JSON) lists for the graph in ``artifact``.

    A generation export's dynamic axes are bounded by its cache (``cache.max_length``).

    Raises:
        KeyError: the contract lists no graph for ``artifact``.
        TypeError, ValueError: the contract's inputs are malformed.

    >>> from kd_train.artifacts import contract_inputs
    >>> contract = {"artifact": "model.onnx", "inputs": [
    ...     {"name": "input_ids", "dtype": "int32", "shapes": [[1, 8]]}]}
    >>> contract_inputs(contract, "model.onnx")[0].shapes
    ((1, 8),)
    """
    graphs = {g["artifact"]: g for g in (contract.get("graphs") or {}).values()}
    if artifact in graphs:
        inputs = graphs[artifact]["inputs"]
    elif contract.get("artifact") == artifact:
        inputs = contract["inputs"]
    else:
        raise KeyError(artifact)
    max_length = (contract.get("cache") or {}).get("max_length")
    return [
        InputSpec(
            str(t["name"]),
            str(t["dtype"]),
            tuple(tuple(None if d is None else int(d) for d in s) for s in t["shapes"] or ()),
            None if max_length is None else int(max_length),
        )
        for t in inputs
    ]


def input_problems(specs: Sequence[InputSpec], arrays: Sequence[Any]) -> list[str]:
    """Compare ``arrays`` (in graph order) with ``specs``; return one line per problem.

    Arrays beyond ``specs`` (a Core ML state) are not checked.
    """
    if len(arrays) < len(specs):
        names = ", ".join(s.name for s in specs)
        return [f"{len(arrays)} inputs given; the export takes {len(specs)} ({names})"]
    problems = []
    for spec, array in zip(specs, arrays, strict=False):
        problem = _array_problem(spec, array)
        if problem:
            problems.append(f"input {spec.name!r} {problem}")
    return problems


def _array_problem(spec: InputSpec, array: Any) -> str | None:
    dtype, shape = getattr(array, "dtype", None), getattr(array, "shape", None)
    if dtype is None or shape is None:
        return f"is a {type(array).__name__}, not an array"
    if str(dtype).removeprefix("torch.") != spec.dtype:
        return f"has dtype {str(dtype).removeprefix('torch.')}; the export takes {spec.dtype}"
    if not spec.shapes:
        return None
    rank = len(spec.shapes[0])
    if len(shape) != rank:
        return f"has {len(shape)} dimensions {tuple(shape)}; the export takes {rank}"
    if 0 in shape:
        return f"has shape {tuple(shape)}: an empty axis (every axis needs a position)"
    for axis, size in enumerate(shape):
        allowed = sorted({s[axis] for s in spec.shapes}, key=lambda d: -1 if d is None else d)
        problem = _axis_problem(axis, int(size), allowed, spec.max_length)
        if problem:
            return problem
    return None


def _axis_problem(axis: int, size: int, allowed: list[int | None], most: int | None) -> str | None:
    if None in allowed:
        if most is not None and size > most:
            return (
                f"has length {size} on axis {axis}, beyond the {most} positions the export "
                "holds: shorten it"
            )
        return None
    if size in allowed:
        return None
    if len(allowed) == 1:
        return f"has {size} on axis {axis}; the export fixes it at {allowed[0]}"
    listed = ", ".join(map(str, allowed))
    return (
        f"has length {size} on axis {axis}; the export accepts only {listed}: "
        "pad or truncate it to one of them"
    )
