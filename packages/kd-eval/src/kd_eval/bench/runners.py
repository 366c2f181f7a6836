"""Greedy generation on four kinds of model, behind one small interface.

* :class:`HFRunner`: a saved ``transformers`` model directory; decoding reuses the KV cache.
* :class:`TorchScriptRunner`: a ``.pt``/``.ts`` file for ``torch.jit.load``, called as
  ``module(input_ids, attention_mask) -> logits``.
* :class:`ExportedProgramRunner`: a ``torch.export`` ``.pt2`` archive, called the same way.
* :class:`ONNXRunner`: a ``.onnx`` file run in ``onnxruntime`` (CPU); input names and
  dtypes are read from the session (``input_ids`` and, if present, ``attention_mask``; int32
  or int64), the ``logits`` output (or the first output) is used.

Exported models take no cache, so their decode step recomputes the whole sequence: their
decode tokens/s measure that, not an incremental step. ``prefill(ids)`` returns the first
new token ``[B]`` and a state; ``decode(token, state)`` returns the next token and state.

Trust and inputs (:mod:`kd_train.artifacts`): TorchScript and ``torch.export`` files are
unpickled when loaded, so they open only with ``trust_artifact=True`` (``kd-eval bench
--trust-artifact``), and never when their archive holds more than tensors. An exported file
with a ``contract.json`` beside it (a ``kd-convert export`` directory) must hash as the
contract says, and every call is checked against the contract's inputs (dtype, rank, batch,
enumerated lengths) before the runtime sees it; without a contract, against what the graph
declares (an ONNX session's or an ExportedProgram's dtypes, ranks and fixed axes; TorchScript
declares none). :meth:`Runner.check_request` refuses a whole benchmark configuration up
front. A ``transformers`` model refuses sequences beyond its ``max_position_embeddings``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from kd_train.artifacts import (
    InputSpec,
    archive_problems,
    contract_inputs,
    input_problems,
    untrusted_message,
)

from kd_eval.errors import BenchError
from kd_eval.loading.models import load_model

#: The file a ``kd-convert export`` directory describes its artifact in.
CONTRACT_FILE = "contract.json"


class Runner(Protocol):
    """What the benchmark needs from a model."""

    kind: str
    vocab_size: int
    parameters: int | None

    def prefill(self, ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Run the prompt ``[B, S]``; return the first generated token ``[B]`` and a state."""
        ...

    def decode(self, token: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Append ``token [B]``; return the next token ``[B]`` and the new state."""
        ...

    def check_request(self, batch: int, seq_len: int, new_tokens: int) -> None:
        """Raise :class:`~kd_eval.errors.BenchError` if the model cannot take such a request."""
        ...


class HFRunner:
    """A ``transformers`` causal LM with KV-cache decoding."""

    kind = "hf"

    def __init__(self, path: str | Path) -> None:
        loaded = load_model(path)
        self.model = loaded.model
        self.vocab_size = loaded.vocab_size
        self.parameters: int | None = loaded.parameters
        # transformers 5 renamed ``past_key_values`` to ``cache`` (argument and output).
        params = inspect.signature(self.model.forward).parameters
        self._cache_name = "cache" if "cache" in params else "past_key_values"
        self.path = Path(path)

    def check_request(self, batch: int, seq_len: int, new_tokens: int) -> None:
        """Refuse a prompt plus new tokens beyond the model's ``max_position_embeddings``."""
        most = getattr(self.model.config, "max_position_embeddings", None)
        total = seq_len + new_tokens - 1  # the last token is chosen, never fed back
        if most is not None and total > int(most):
            raise BenchError(
                f"{self.path}: a request of {seq_len} prompt tokens and {new_tokens} new tokens "
                f"feeds {total} positions, beyond the model's max_position_embeddings "
                f"({most}): lower --seq-lens or --new-tokens"
            )

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Run the prompt with ``use_cache=True``."""
        mask = torch.ones_like(ids)
        out = self.model(input_ids=ids, attention_mask=mask, use_cache=True)
        return out.logits[:, -1].argmax(-1), (getattr(out, self._cache_name), mask)

    @torch.no_grad()
    def decode(self, token: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """One incremental step over the cache."""
        cache, mask = state
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = self.model(
            input_ids=token[:, None],
            attention_mask=mask,
            use_cache=True,
            **{self._cache_name: cache},
        )
        return out.logits[:, -1].argmax(-1), (getattr(out, self._cache_name), mask)


class FullRecomputeRunner:
    """Shared decoding of exported models, which take no cache: rerun the whole sequence.

    A subclass sets ``path`` and ``specs`` (the contract's inputs; without a contract, what
    the graph itself declares, where it declares anything) and defines :meth:`feeds` and
    :meth:`run`; :meth:`logits` checks the feeds in between.
    """

    path: Path
    specs: list[InputSpec]

    def feeds(self, ids: torch.Tensor) -> list[np.ndarray]:
        """Return the arrays the runtime is fed for ``ids [B, S]`` (``input_ids`` first)."""
        raise NotImplementedError

    def run(self, feeds: list[np.ndarray]) -> torch.Tensor:
        """Run the runtime on ``feeds``; return the logits ``[B, S, V]``."""
        raise NotImplementedError

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Return the logits ``[B, S, V]`` of ``ids [B, S]``, the feeds checked first."""
        feeds = self.feeds(ids)
        self._check(feeds)
        return self.run(feeds)

    def check_request(self, batch: int, seq_len: int, new_tokens: int) -> None:
        """Check every shape a request feeds (``seq_len`` up to ``seq_len + new_tokens - 1``)."""
        for length in range(seq_len, seq_len + new_tokens):
            self._check(self.feeds(torch.zeros((batch, length), dtype=torch.long)))

    def _check(self, feeds: list[np.ndarray]) -> None:
        problems = input_problems(self.specs, feeds)
        if problems:
            raise BenchError(f"{self.path}: " + "; ".join(problems))

    def prefill(self, ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Run the prompt; the state is the sequence so far."""
        return self.logits(ids)[:, -1].argmax(-1), ids

    def decode(self, token: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Append ``token`` and rerun the full sequence."""
        ids = torch.cat([state, token[:, None].to(state.dtype)], dim=1)
        return self.logits(ids)[:, -1].argmax(-1), ids

    def _probe_vocab(self, probe: tuple[int, ...] | None = None) -> int:
        """Run ``probe``, else the first shape the contract accepts, else ``[1, 2]``."""
        if probe is None:
            shape = self.specs[0].shapes[0] if self.specs and self.specs[0].shapes else (1, 2)
            probe = tuple(2 if d is None else d for d in shape)
        return int(self.logits(torch.zeros(probe, dtype=torch.long)).shape[-1])


class TorchScriptRunner(FullRecomputeRunner):
    """A TorchScript module ``(input_ids, attention_mask) -> logits [B, S, V]``.

    Loading unpickles the file: it opens only with ``trust_artifact=True``.
    """

    kind = "torchscript"

    def __init__(
        self,
        path: str | Path,
        dtype: torch.dtype = torch.int32,
        *,
        trust_artifact: bool = False,
        specs: list[InputSpec] | None = None,
    ) -> None:
        self.path, self.specs = Path(path), specs or []
        require_trust(self.path, "TorchScript archive", trust_artifact)
        try:
            self.module = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as exc:
            raise BenchError(f"cannot load TorchScript file {path}: {exc}") from exc
        self.module.eval()
        self.dtype = dtype
        self.parameters: int | None = sum(p.numel() for p in self.module.parameters())
        self.vocab_size = self._probe_vocab()

    def feeds(self, ids: torch.Tensor) -> list[np.ndarray]:
        """``input_ids`` in ``self.dtype`` and an all-ones mask."""
        x = ids.to(self.dtype).numpy()
        return [x, np.ones_like(x)]

    @torch.no_grad()
    def run(self, feeds: list[np.ndarray]) -> torch.Tensor:
        """Call the module; its refusal of a shape becomes a :class:`~kd_eval.errors.BenchError`."""
        try:
            return _pick_logits(self.module(*(torch.from_numpy(a) for a in feeds)))
        except (RuntimeError, AssertionError) as exc:  # a TorchScript error, a shape guard
            shapes = [tuple(a.shape) for a in feeds]
            raise BenchError(f"{self.path} refused inputs of shapes {shapes}: {exc}") from exc


class ExportedProgramRunner(TorchScriptRunner):
    """A ``torch.export`` archive's ``ExportedProgram.module()``, called as TorchScript is.

    Loading unpickles parts of the archive: it opens only with ``trust_artifact=True``.
    """

    kind = "exported"

    def __init__(
        self,
        path: str | Path,
        dtype: torch.dtype = torch.int32,
        *,
        trust_artifact: bool = False,
        specs: list[InputSpec] | None = None,
    ) -> None:
        self.path, self.specs = Path(path), specs or []
        require_trust(self.path, "torch.export archive", trust_artifact)
        try:
            program = torch.export.load(self.path)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise BenchError(f"cannot load torch.export archive {path}: {exc}") from exc
        self.module = program.module()
        self.dtype = dtype
        self.parameters = sum(p.numel() for p in program.state_dict.values())
        if not self.specs:  # no contract: the program's own input dtypes and static axes
            nodes = {node.name: node for node in program.graph.nodes}
            names = program.graph_signature.user_inputs
            self.specs = [_program_spec(str(name), nodes[name].meta["val"]) for name in names]
        example = program.example_inputs
        probe = tuple(example[0][0].shape) if example and example[0] else None
        self.vocab_size = self._probe_vocab(probe)


class ONNXRunner(FullRecomputeRunner):
    """An ONNX causal LM run in onnxruntime on the CPU."""

    kind = "onnx"

    def __init__(
        self, path: str | Path, threads: int | None = None, *, specs: list[InputSpec] | None = None
    ) -> None:
        import onnxruntime as ort

        self.path, self.specs = Path(path), specs or []
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise BenchError(f"cannot load ONNX model {path}: {exc}") from exc
        self.inputs = {i.name: _numpy_int(i.type, path) for i in self.session.get_inputs()}
        if "input_ids" not in self.inputs:
            raise BenchError(
                f"{path}: the ONNX model has inputs {sorted(self.inputs)} but no 'input_ids'; "
                "export it with named inputs input_ids (and attention_mask)"
            )
        extra = sorted(set(self.inputs) - {"input_ids", "attention_mask"})
        if extra:
            raise BenchError(
                f"{path}: the ONNX model also takes {extra}; kd-eval bench runs whole-sequence "
                "graphs of input_ids (and attention_mask), not a prefill or decode graph"
            )
        if not self.specs:  # no contract: the graph's own dtypes, ranks and fixed axes
            declared = {i.name: i for i in self.session.get_inputs()}
            fed = [name for name in ("input_ids", "attention_mask") if name in self.inputs]
            self.specs = [_session_spec(declared[name], self.inputs[name]) for name in fed]
        outputs = [o.name for o in self.session.get_outputs()]
        self.output = "logits" if "logits" in outputs else outputs[0]
        self.parameters: int | None = None
        self.vocab_size = self._probe_vocab()

    def feeds(self, ids: torch.Tensor) -> list[np.ndarray]:
        """``input_ids`` (and an all-ones ``attention_mask``) in the session's dtypes."""
        feed = [ids.numpy().astype(self.inputs["input_ids"])]
        if "attention_mask" in self.inputs:
            feed.append(np.ones(ids.shape, dtype=self.inputs["attention_mask"]))
        return feed

    def run(self, feeds: list[np.ndarray]) -> torch.Tensor:
        """Run the session; its refusal of a shape becomes a :class:`~kd_eval.errors.BenchError`."""
        names = ["input_ids", "attention_mask"][: len(feeds)]
        try:
            (out,) = self.session.run([self.output], dict(zip(names, feeds, strict=True)))
        except Exception as exc:  # onnxruntime raises its own untyped errors
            shapes = [tuple(a.shape) for a in feeds]
            raise BenchError(f"{self.path} refused inputs of shapes {shapes}: {exc}") from exc
        return torch.from_numpy(np.asarray(out))


def _session_spec(node: Any, dtype: type[np.integer[Any]]) -> InputSpec:
    """An onnxruntime input: named axes (or unknown ones) are dynamic, unbounded."""
    if node.shape is None:  # unknown rank: only the dtype is known
        return InputSpec(node.name, np.dtype(dtype).name, ())
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in node.shape)
    return InputSpec(node.name, np.dtype(dtype).name, (shape,))


def _program_spec(name: str, value: torch.Tensor) -> InputSpec:
    shape = tuple(d if isinstance(d, int) else None for d in value.shape)
    return InputSpec(name, str(value.dtype).removeprefix("torch."), (shape,))


def _numpy_int(onnx_type: str, path: str | Path) -> type[np.integer[Any]]:
    types: dict[str, type[np.integer[Any]]] = {"tensor(int32)": np.int32, "tensor(int64)": np.int64}
    if onnx_type not in types:
        raise BenchError(f"{path}: an input has type {onnx_type}; expected int32 or int64 ids")
    return types[onnx_type]


def _pick_logits(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        return out["logits"]
    return out[0]


def require_trust(path: Path, kind: str, trust_artifact: bool) -> None:
    """Refuse to unpickle ``path`` unless trusted, and never when it holds more than tensors.

    Raises:
        BenchError: naming the file, what it holds, and ``--trust-artifact``.
    """
    problems = archive_problems(path)
    if problems:
        raise BenchError(
            "; ".join(problems) + ": kd's exports hold nothing of the kind, so kd refuses to "
            "load this archive, with or without --trust-artifact"
        )
    if not trust_artifact:
        raise BenchError(untrusted_message(path, kind))


def contract_for(path: Path) -> list[InputSpec] | None:
    """Return the inputs ``contract.json`` beside ``path`` lists for it (``None``: no contract).

    Raises:
        BenchError: the contract is unreadable, does not list the file, or records another
            SHA-256 for it.
    """
    contract_path = path.parent / CONTRACT_FILE
    if not contract_path.is_file():
        return None
    try:
        contract = json.loads(contract_path.read_text(encoding="utf-8"))
        inputs = contract_inputs(contract, path.name)
        files = dict(contract["files"])
        if path.name not in files:  # the contract must hash the artifact itself
            raise KeyError(f"files.{path.name}")
    except KeyError as exc:
        raise BenchError(
            f"{contract_path} does not describe {path.name} (no {exc} entry): bench the "
            "artifact its export wrote, or move the file out of the export directory"
        ) from exc
    except (ValueError, TypeError, AttributeError) as exc:
        raise BenchError(f"{contract_path} is not a valid kd-convert contract: {exc}") from exc
    for name, recorded in files.items():  # the artifact and its external data, if any
        _check_hash(path.parent / str(name), str(recorded), contract_path)
    return inputs


def _check_hash(path: Path, recorded: str, contract_path: Path) -> None:
    if not path.is_file():
        raise BenchError(f"{path} is missing: {contract_path} lists it; re-export")
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    if digest != recorded:
        raise BenchError(
            f"{path} has SHA-256 {digest[:12]}..., {contract_path} says {recorded[:12]}...: "
            "re-export it"
        )


def open_runner(path: str | Path, *, trust_artifact: bool = False) -> Runner:
    """Open a model directory (HF), a ``kd-convert export`` directory, or an exported file.

    Exported files: ``.onnx``, TorchScript ``.pt``/``.ts``/``.torchscript`` and ``torch.export``
    ``.pt2``; the last two only with ``trust_artifact`` (see the module docstring). A
    ``contract.json`` beside the file bounds every input.

    Raises:
        BenchError: the path does not exist, its kind is not recognised, a pickled format
            without trust, or a file that does not match its contract.
    """
    target = Path(path)
    if target.is_dir() and (target / CONTRACT_FILE).is_file():
        try:
            artifact = json.loads((target / CONTRACT_FILE).read_text(encoding="utf-8"))["artifact"]
        except (ValueError, KeyError, TypeError) as exc:
            raise BenchError(f"{target / CONTRACT_FILE} is not a valid contract: {exc}") from exc
        target = target / str(artifact)
    if target.is_dir():
        return HFRunner(target)
    if not target.exists():
        raise BenchError(
            f"{target} does not exist; pass a saved model directory, a kd-convert export "
            "directory, a .onnx file, a TorchScript .pt/.ts file or a torch.export .pt2 file"
        )
    if target.suffix != ".onnx" and target.suffix not in _PICKLED:
        raise BenchError(
            f"{target}: unknown model file type {target.suffix!r}; use a model directory, "
            ".onnx, a TorchScript .pt/.ts file or a torch.export .pt2 file"
        )
    specs = contract_for(target)
    if target.suffix == ".onnx":
        return ONNXRunner(target, specs=specs)
    return _PICKLED[target.suffix](target, trust_artifact=trust_artifact, specs=specs)


#: Pickled formats by suffix (opened only with ``trust_artifact``).
_PICKLED: dict[str, type[TorchScriptRunner]] = {
    ".pt": TorchScriptRunner,
    ".ts": TorchScriptRunner,
    ".torchscript": TorchScriptRunner,
    ".pt2": ExportedProgramRunner,
}
