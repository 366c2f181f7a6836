"""Greedy generation on three kinds of model, behind one small interface.

* :class:`HFRunner`: a saved ``transformers`` model directory; decoding reuses the KV cache.
* :class:`TorchScriptRunner`: a ``.pt``/``.ts`` file for ``torch.jit.load``, called as
  ``module(input_ids, attention_mask) -> logits``.
* :class:`ONNXRunner`: a ``.onnx`` file run in ``onnxruntime`` (CPU); input names and
  dtypes are read from the session (``input_ids`` and, if present, ``attention_mask``; int32
  or int64), the ``logits`` output (or the first output) is used.

Exported models take no cache, so their decode step recomputes the whole sequence: their
decode tokens/s measure that, not an incremental step. ``prefill(ids)`` returns the first
new token ``[B]`` and a state; ``decode(token, state)`` returns the next token and state.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from kd_eval.errors import BenchError
from kd_eval.loading.models import load_model


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
    """Shared decoding of exported models, which take no cache: rerun the whole sequence."""

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Return the logits ``[B, S, V]`` of ``ids [B, S]`` (defined by each subclass)."""
        raise NotImplementedError

    def prefill(self, ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Run the prompt; the state is the sequence so far."""
        return self.logits(ids)[:, -1].argmax(-1), ids

    def decode(self, token: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Append ``token`` and rerun the full sequence."""
        ids = torch.cat([state, token[:, None].to(state.dtype)], dim=1)
        return self.logits(ids)[:, -1].argmax(-1), ids

    def _probe_vocab(self) -> int:
        return int(self.logits(torch.zeros((1, 2), dtype=torch.long)).shape[-1])


class TorchScriptRunner(FullRecomputeRunner):
    """A TorchScript module ``(input_ids, attention_mask) -> logits [B, S, V]``."""

    kind = "torchscript"

    def __init__(self, path: str | Path, dtype: torch.dtype = torch.int32) -> None:
        try:
            self.module = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as exc:
            raise BenchError(f"cannot load TorchScript file {path}: {exc}") from exc
        self.module.eval()
        self.dtype = dtype
        self.parameters: int | None = sum(p.numel() for p in self.module.parameters())
        self.vocab_size = self._probe_vocab()

    @torch.no_grad()
    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Call the module with int inputs of ``self.dtype``."""
        x = ids.to(self.dtype)
        out = self.module(x, torch.ones_like(x))
        return _pick_logits(out)


class ONNXRunner(FullRecomputeRunner):
    """An ONNX causal LM run in onnxruntime on the CPU."""

    kind = "onnx"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

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
        outputs = [o.name for o in self.session.get_outputs()]
        self.output = "logits" if "logits" in outputs else outputs[0]
        self.parameters: int | None = None
        self.vocab_size = self._probe_vocab()

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Feed ``input_ids`` (and an all-ones ``attention_mask``) in the session's dtypes."""
        feed = {"input_ids": ids.numpy().astype(self.inputs["input_ids"])}
        if "attention_mask" in self.inputs:
            feed["attention_mask"] = np.ones(ids.shape, dtype=self.inputs["attention_mask"])
        (out,) = self.session.run([self.output], feed)
        return torch.from_numpy(np.asarray(out))


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


def open_runner(path: str | Path) -> Runner:
    """Open a model directory (HF), a ``.onnx`` file, or a ``.pt``/``.ts`` TorchScript file.

    Raises:
        BenchError: the path does not exist or its kind is not recognised.
    """
    target = Path(path)
    if target.is_dir():
        return HFRunner(target)
    if not target.exists():
        raise BenchError(
            f"{target} does not exist; pass a saved model directory, a .onnx file, or a "
            "TorchScript .pt/.ts file"
        )
    if target.suffix == ".onnx":
        return ONNXRunner(target)
    if target.suffix in (".pt", ".ts", ".torchscript"):
        return TorchScriptRunner(target)
    raise BenchError(
        f"{target}: unknown model file type {target.suffix!r}; use a model directory, "
        ".onnx, or a TorchScript .pt/.ts file"
    )
