"""``contract.json``: what an export promises, and :func:`verify` that it keeps the promise.

A contract records the format, the artifact, the input/output names with dtypes and
enumerated shapes, the tokenizer fingerprint, SHA-256 of the source weights and of every
exported file, and the tool versions. ``verify`` re-hashes the files and reads the I/O
structure back from the artifact itself (ONNX graph, Core ML spec, ...), so a tampered or
swapped export fails.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from kd_train.artifacts import InputSpec, input_problems
from kd_train.atomic import atomic_write_text
from kd_train.provenance import installed_versions

from kd_convert.errors import ContractError, KDConvertError, ValidationError
from kd_convert.fingerprint import hash_tree
from kd_convert.formats import format_module
from kd_convert.formats.base import IOSignature, Runner, Shape, TensorSig
from kd_convert.spec import ExportSpec
from kd_convert.stateful import STEP_INPUTS, CacheLayout, past_names, present_names

CONTRACT_FILE = "contract.json"
PARITY_FILE = "parity.json"
SCHEMA_VERSION = 1
#: The version of a contract with a ``quantization`` record (a QAT student's export); a
#: contract without one is written exactly as version 1 was.
QUANTIZED_SCHEMA_VERSION = 2
#: The contract versions this kd-convert reads.
SCHEMA_VERSIONS = (SCHEMA_VERSION, QUANTIZED_SCHEMA_VERSION)
#: Distributions whose versions a contract records, when installed.
TOOLS = ("kd-convert", "kd-train", "torch", "transformers", "onnx", "onnxscript",
         "onnxruntime", "coremltools", "numpy")  # fmt: skip


@dataclass(frozen=True)
class GraphContract:
    """One graph of a generation export: its artifact and its I/O."""

    artifact: str
    inputs: list[TensorSig]
    outputs: list[TensorSig]


@dataclass(frozen=True)
class Contract:
    """The promise of one export directory (see the module docstring for each field).

    A generation export (``task == "generation"``) lists its prefill and decode graphs in
    ``graphs`` (``artifact``, ``inputs`` and ``outputs`` repeat the prefill graph), the KV
    cache layout in ``cache`` (:class:`~kd_convert.stateful.CacheLayout`) and the
    ``bos``/``eos``/``pad`` ids its generate loop uses in ``special_tokens``.
    """

    format: str
    artifact: str
    inputs: list[TensorSig]
    outputs: list[TensorSig]
    seq_lengths: list[int]
    batch_size: int
    files: dict[str, str]
    source_sha256: dict[str, str]
    tokenizer_fingerprint: str | None
    tools: dict[str, str]
    opset: int | None = None
    quantize: str | None = None
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    task: str = "sequence"
    graphs: dict[str, GraphContract] = field(default_factory=dict)
    cache: dict[str, Any] | None = None
    special_tokens: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None

    def to_json(self) -> str:
        """Return the contract as indented, key-sorted JSON (no ``quantization``: none)."""
        data = asdict(self)
        if data["quantization"] is None:
            del data["quantization"]
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def expected_io(spec: ExportSpec, vocab_size: int) -> tuple[list[TensorSig], list[TensorSig]]:
    """Return the inputs/outputs every export of ``spec`` must have (int32 in, float32 out)."""
    shapes: list[Shape] = [list(s) for s in spec.input_shapes()]
    inputs = [TensorSig(name, "int32", shapes) for name in ("input_ids", "attention_mask")]
    logits: list[Shape] = [[*s, vocab_size] for s in shapes]
    return inputs, [TensorSig("logits", "float32", logits)]


def build_contract(
    out_dir: Path,
    spec: ExportSpec,
    vocab_size: int,
    source_sha256: dict[str, str],
    tokenizer_fingerprint: str | None,
    opset: int | None = None,
    quantization: dict[str, Any] | None = None,
) -> Contract:
    """Hash the artifact under ``out_dir`` and return its contract.

    ``quantization`` describes a QAT student's scheme
    (:meth:`kd_convert.quantized.QATStudent.summary`); such a contract is version
    :data:`QUANTIZED_SCHEMA_VERSION`.
    """
    inputs, outputs = expected_io(spec, vocab_size)
    return Contract(
        format=spec.format,
        artifact=format_module(spec.format).ARTIFACT,
        inputs=inputs,
        outputs=outputs,
        seq_lengths=list(spec.seq_lengths),
        batch_size=spec.batch_size,
        files=hash_tree(out_dir, exclude=(CONTRACT_FILE, PARITY_FILE)),
        source_sha256=source_sha256,
        tokenizer_fingerprint=tokenizer_fingerprint,
        tools=tool_versions(),
        opset=opset,
        quantize=spec.quantize,
        quantization=quantization,
        schema_version=SCHEMA_VERSION if quantization is None else QUANTIZED_SCHEMA_VERSION,
    )


def generation_graphs(
    spec: ExportSpec, layout: CacheLayout, vocab_size: int
) -> dict[str, GraphContract]:
    """Return the prefill and decode graphs a generation export of ``spec`` must have.

    ``None`` marks the dynamic prompt and cache axes. Core ML has one ``"stateful"`` graph
    whose cache is in its states (:data:`~kd_convert.stateful.STATE_NAMES`). ``torch.export``
    names the decode
    graph's flat cache inputs ``past_key_values_0``, ``past_key_values_1``, ... (the order of
    :func:`~kd_convert.stateful.past_names`); ONNX uses optimum's names.

    >>> from kd_convert.contract import generation_graphs
    >>> from kd_convert.spec import ExportSpec
    >>> from kd_convert.stateful import CacheLayout
    >>> layout = CacheLayout(1, 2, 8, "float32", 64)
    >>> graphs = generation_graphs(ExportSpec("onnx", (8,), task="generation"), layout, 50)
    >>> [t.name for t in graphs["decode"].inputs]  # doctest: +NORMALIZE_WHITESPACE
    ['input_ids', 'attention_mask', 'position_ids', 'past_key_values.0.key',
     'past_key_values.0.value']
    >>> graphs["decode"].outputs[1].shapes
    [[1, 2, None, 8]]
    """
    batch, dtype = spec.batch_size, layout.dtype
    if spec.format == "coreml":  # one graph; the cache lives in its states
        steps = [TensorSig(n, "int32", [[batch, None]]) for n in STEP_INPUTS]
        logits = TensorSig("logits", "float32", None)
        return {"stateful": GraphContract("model.mlpackage", steps, [logits])}
    cache_shape: list[Shape] = [[batch, layout.kv_heads, None, layout.head_dim]]
    presents = [TensorSig(name, dtype, cache_shape) for name in present_names(layout.layers)]
    pasts = past_names(layout.layers)
    if spec.format == "exported":
        pasts = [f"past_key_values_{k}" for k in range(len(pasts))]

    def graph(name: str, query: int | None, cache: list[str]) -> GraphContract:
        inputs = [TensorSig(n, "int32", [[batch, query]]) for n in STEP_INPUTS]
        inputs[1] = TensorSig("attention_mask", "int32", [[batch, None]])
        inputs += [TensorSig(n, dtype, cache_shape) for n in cache]
        logits = TensorSig("logits", "float32", [[batch, query, vocab_size]])
        suffix = Path(format_module(spec.format).ARTIFACT).suffix
        return GraphContract(f"{name}{suffix}", inputs, [logits, *presents])

    return {"prefill": graph("prefill", None, []), "decode": graph("decode", 1, pasts)}


def build_generation_contract(
    out_dir: Path,
    spec: ExportSpec,
    layout: CacheLayout,
    vocab_size: int,
    sources: tuple[dict[str, str], str | None],
    special_tokens: dict[str, Any],
    opset: int | None = None,
) -> Contract:
    """Hash the prefill and decode artifacts under ``out_dir`` and return their contract.

    ``sources`` is ``(source weights SHA-256, tokenizer fingerprint)``.
    """
    graphs = generation_graphs(spec, layout, vocab_size)
    prefill = next(iter(graphs.values()))  # the prefill graph, or Core ML's one graph
    return Contract(
        format=spec.format,
        artifact=prefill.artifact,
        inputs=prefill.inputs,
        outputs=prefill.outputs,
        seq_lengths=list(spec.seq_lengths),
        batch_size=spec.batch_size,
        files=hash_tree(out_dir, exclude=(CONTRACT_FILE, PARITY_FILE)),
        source_sha256=sources[0],
        tokenizer_fingerprint=sources[1],
        tools=tool_versions(),
        opset=opset,
        task="generation",
        graphs=graphs,
        cache=layout.to_json(),
        special_tokens=special_tokens,
    )


def tool_versions() -> dict[str, str]:
    """Return installed versions of :data:`TOOLS` and of Python."""
    return {"python": platform.python_version(), **installed_versions(TOOLS)}


def write_contract(out_dir: Path, contract: Contract) -> Path:
    """Write ``contract.json`` into ``out_dir`` atomically; return its path."""
    path = Path(out_dir) / CONTRACT_FILE
    atomic_write_text(path, contract.to_json())
    return path


def read_contract(out_dir: str | Path) -> Contract:
    """Load ``contract.json`` from ``out_dir``.

    Raises:
        ContractError: missing, not JSON, missing fields or an unknown ``schema_version``.
    """
    path = Path(out_dir) / CONTRACT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["inputs"] = [TensorSig(**t) for t in data["inputs"]]
        data["outputs"] = [TensorSig(**t) for t in data["outputs"]]
        data["graphs"] = {
            name: GraphContract(
                graph["artifact"],
                [TensorSig(**t) for t in graph["inputs"]],
                [TensorSig(**t) for t in graph["outputs"]],
            )
            for name, graph in data.get("graphs", {}).items()
        }
        contract = Contract(**data)
    except FileNotFoundError as exc:
        raise ContractError(
            f"{path} does not exist: verify a directory written by 'kd-convert export'"
        ) from exc
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ContractError(f"{path} is not a valid kd-convert contract: {exc}") from exc
    if contract.schema_version not in SCHEMA_VERSIONS:
        raise ContractError(
            f"{path}: schema_version {contract.schema_version!r} is not one this kd-convert "
            f"reads ({', '.join(map(str, SCHEMA_VERSIONS))}); upgrade kd-convert or re-export"
        )
    return contract


def verify(out_dir: str | Path, *, trust_artifact: bool = False) -> Contract:
    """Check an export directory against its contract; return the contract if it holds.

    ``trust_artifact`` allows reading the structure of a pickled format (TorchScript,
    ``torch.export``); without it such an export is refused after its hashes are checked.

    Raises:
        ContractError: listing every mismatch (hash, missing or extra file, I/O structure).
        kd_convert.errors.UntrustedArtifactError: a pickled format without ``trust_artifact``,
            or an archive holding more than tensors.
    """
    base = Path(out_dir)
    contract = read_contract(base)
    problems = file_problems(base, contract)
    if not problems:  # structure is only worth reading from files that hash right
        for graph in _graphs(contract):
            found = describe(base, contract, graph.artifact, trust_artifact=trust_artifact)
            problems += _state_problems(contract, found)
            problems += [
                f"{graph.artifact}: {problem}" if contract.graphs else problem
                for problem in structure_problems(contract, found, graph)
            ]
    if problems:
        raise ContractError(
            f"{base} does not match its contract: " + "; ".join(problems) + "; re-export it"
        )
    return contract


def describe(
    out_dir: Path,
    contract: Contract,
    artifact: str | None = None,
    *,
    trust_artifact: bool = False,
) -> IOSignature:
    """Read the I/O signature back from ``artifact`` (default: the contract's artifact).

    Raises:
        ContractError: the file cannot be read as the contract's format.
        kd_convert.errors.UntrustedArtifactError: see :func:`verify`.
    """
    path = out_dir / (artifact or contract.artifact)
    try:
        module = format_module(contract.format)
        signature: IOSignature = module.describe(path, trust_artifact=trust_artifact)
    except KDConvertError:
        raise
    except Exception as exc:  # each runtime fails on a corrupt file in its own way
        raise ContractError(f"{path} cannot be read as {contract.format}: {exc}") from exc
    return signature


def input_specs(contract: Contract, artifact: str | None = None) -> list[InputSpec]:
    """Return the inputs the graph in ``artifact`` (default: the contract's) accepts.

    A generation export's dynamic axes hold at most ``cache["max_length"]`` positions.

    >>> from kd_convert.contract import build_contract, input_specs
    >>> from kd_convert.spec import ExportSpec
    >>> import tempfile
    >>> contract = build_contract(tempfile.mkdtemp(), ExportSpec("onnx", (8, 16)), 50, {}, None)
    >>> input_specs(contract)[0].shapes
    ((1, 8), (1, 16))
    """
    name = artifact or contract.artifact
    graph = next((g for g in _graphs(contract) if g.artifact == name), None)
    if graph is None:
        raise ContractError(f"the contract lists no graph in {name!r}")
    max_length = (contract.cache or {}).get("max_length")
    return tensor_specs(graph.inputs, None if max_length is None else int(max_length))


def tensor_specs(tensors: list[TensorSig], max_length: int | None = None) -> list[InputSpec]:
    """Turn contract tensors into the specs :func:`check_inputs` compares arrays with."""
    return [
        InputSpec(
            t.name or "",
            t.dtype,
            tuple(tuple(shape) for shape in t.shapes or ()),
            max_length,
        )
        for t in tensors
    ]


def check_inputs(specs: list[InputSpec], arrays: Sequence[Any], where: str | Path) -> None:
    """Refuse ``arrays`` that break ``specs`` before the runtime of ``where`` sees them.

    Raises:
        kd_convert.errors.ValidationError: naming ``where`` and every problem (dtype, rank,
            fixed axis such as the batch, enumerated length, positions beyond the cache).
    """
    problems = input_problems(specs, arrays)
    if problems:
        raise ValidationError(f"{where}: " + "; ".join(problems))


def checked_runner(runner: Runner, specs: list[InputSpec], where: str | Path) -> Runner:
    """Wrap ``runner`` so that :func:`check_inputs` sees every call first."""

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        check_inputs(specs, (input_ids, attention_mask), where)
        return runner(input_ids, attention_mask)

    return run


def open_runner(out_dir: str | Path, *, trust_artifact: bool = False) -> Runner:
    """Return the checked runner of the sequence export in ``out_dir`` (hashes checked first).

    Raises:
        ContractError: no valid contract, files that do not hash as it says, a generation
            export (use :func:`kd_convert.generate.load_stepper`).
        kd_convert.errors.UntrustedArtifactError: see :func:`verify`.
        kd_convert.formats.base.RuntimeUnavailableError: Core ML off macOS.
    """
    base = Path(out_dir)
    contract = read_contract(base)
    if contract.task != "sequence":
        raise ContractError(
            f"{base} holds a {contract.task!r} export: run it with kd_convert.generate"
        )
    problems = file_problems(base, contract)
    if problems:
        raise ContractError(f"{base} does not match its contract: " + "; ".join(problems))
    path = base / contract.artifact
    runner: Runner = format_module(contract.format).load_runner(path, trust_artifact=trust_artifact)
    return checked_runner(runner, input_specs(contract), path)


def _state_problems(contract: Contract, found: IOSignature) -> list[str]:
    """Compare the Core ML states of an artifact with the contract's cache states."""
    promised = (contract.cache or {}).get("states")
    if not promised:
        return []
    names = [t.name for t in found.states or []]
    if names != promised:
        return [f"states are {names}, the contract says {promised}"]
    return []


def _graphs(contract: Contract) -> list[GraphContract]:
    if contract.graphs:
        return list(contract.graphs.values())
    return [GraphContract(contract.artifact, contract.inputs, contract.outputs)]


def file_problems(out_dir: Path, contract: Contract) -> list[str]:
    """Compare the files on disk with the contract's SHA-256 list."""
    actual = hash_tree(out_dir, exclude=(CONTRACT_FILE, PARITY_FILE))
    problems = [f"{name} is missing" for name in contract.files if name not in actual]
    problems += [f"{name} is not in the contract" for name in actual if name not in contract.files]
    problems += [
        f"{name} has SHA-256 {digest[:12]}..., the contract says {contract.files[name][:12]}..."
        for name, digest in actual.items()
        if name in contract.files and digest != contract.files[name]
    ]
    return problems


def structure_problems(
    contract: Contract, found: IOSignature, graph: GraphContract | None = None
) -> list[str]:
    """Compare the I/O read from an artifact with the contract's (or with one ``graph``'s)."""
    inputs, outputs = (
        (graph.inputs, graph.outputs) if graph else (contract.inputs, contract.outputs)
    )
    problems = _compare_tensors("input", inputs, found.inputs)
    problems += _compare_tensors("output", outputs, found.outputs)
    problems += [
        f"input {t.name!r} is int64: device runtimes need int32"
        for t in found.inputs
        if t.dtype == "int64"
    ]
    if contract.opset is not None and found.opset != contract.opset:
        problems.append(f"ONNX opset is {found.opset}, the contract says {contract.opset}")
    return problems


def _compare_tensors(kind: str, promised: list[TensorSig], found: list[TensorSig]) -> list[str]:
    if len(promised) != len(found):
        return [f"{len(found)} {kind}s found, the contract lists {len(promised)}"]
    problems = []
    for want, got in zip(promised, found, strict=True):
        label = f"{kind} {want.name!r}"
        if got.name is not None and got.name != want.name:
            problems.append(f"{label} is named {got.name!r} in the artifact")
        if got.dtype != want.dtype:
            problems.append(f"{label} has dtype {got.dtype}, the contract says {want.dtype}")
        if got.shapes is not None and want.shapes is not None:
            missing = [s for s in want.shapes if not any(_fits(s, g) for g in got.shapes)]
            if missing:
                problems.append(f"{label} does not accept shapes {missing} (it has {got.shapes})")
    return problems


def _fits(shape: Shape, pattern: Shape) -> bool:
    return len(shape) == len(pattern) and all(
        p is None or p == d for d, p in zip(shape, pattern, strict=True)
    )
