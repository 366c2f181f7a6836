"""A small generate loop over a prefill graph and a decode graph, for every runtime.

One :class:`Stepper` per runtime: the PyTorch reference (the wrappers of
:mod:`kd_convert.stateful`, eager), onnxruntime sessions, or ``torch.export`` programs
(:func:`load_stepper` reads an export directory). :func:`generate` is the same loop for all::

    T              = prefill length >= n (the prompt, right-padded with pad_token_id, masked)
    logits, cache  = prefill(ids [1, T], mask [1, T], positions 0..T-1)
    next           = choose(logits[0, n - 1])
    repeat until max_new_tokens or next in eos:
        mask       = mask + [1]                  # the new key is real
        logits, cache = decode([[next]], mask, [[n + step]], cache)
        next       = choose(logits[0, -1])

Tokenizer handling is that of ``transformers``: the prompt ids are used as given (a tokenizer
that adds ``bos`` adds it in :func:`encode_prompt`), generation stops after the first ``eos``
(which is returned, as ``transformers`` returns it), padding uses ``pad_token_id`` and is
masked out. ``choose`` is greedy (argmax), or samples from ``softmax(logits / temperature)``
restricted to the top-p nucleus with a seeded ``torch.Generator``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from kd_train.artifacts import InputSpec
from transformers import PreTrainedModel

from kd_convert.contract import Contract, check_inputs, file_problems, input_specs, read_contract
from kd_convert.errors import ContractError, ExportConfigError
from kd_convert.formats import format_module
from kd_convert.stateful import DecodeWrapper, PrefillWrapper, check_cache_length

#: ``graph(*arrays) -> [logits, *present]``: one prefill or decode call.
Graph = Callable[..., list[np.ndarray]]


@dataclass(frozen=True)
class Stepper:
    """The prefill and decode graphs of one runtime, with the cache limit they enforce.

    Args:
        prefill: ``(input_ids, attention_mask, position_ids) -> [logits, *present]``.
        decode: ``(input_ids, attention_mask, position_ids, *past) -> [logits, *present]``.
        max_length: the most positions the cache may hold.
        min_prefill: the shortest prefill the graph accepts (shorter prompts are padded).
        eos_token_id: ids that end generation (none: run to ``max_new_tokens``).
        pad_token_id: the id that pads a short prompt (masked out).
        inputs: the ``(prefill, decode)`` inputs of the export's contract; every call is
            checked against them before the runtime sees it (empty: not checked, as for the
            PyTorch reference).
        where: the export directory, named in an input error.
    """

    prefill: Graph
    decode: Graph
    max_length: int
    min_prefill: int = 2
    eos_token_id: tuple[int, ...] = ()
    pad_token_id: int = 0
    inputs: tuple[list[InputSpec], list[InputSpec]] = ([], [])
    where: str = "the reference"

    def run_prefill(self, ids: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
        """Run the prefill graph on right-padded int32 ``[1, T]`` ids and mask."""
        check_cache_length(ids.shape[1], self.max_length, "prefill length")
        positions = np.arange(ids.shape[1], dtype=np.int32)[None, :]
        check_inputs(self.inputs[0], (ids, mask, positions), f"{self.where} (prefill)")
        return self.prefill(ids, mask, positions)

    def run_decode(
        self, token: int, mask: np.ndarray, position: int, past: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Run one decode step; ``mask`` covers the cache and the new token."""
        check_cache_length(mask.shape[1], self.max_length, "cache + new token")
        arrays = (np.array([[token]], dtype=np.int32), mask, np.array([[position]], np.int32))
        check_inputs(self.inputs[1], (*arrays, *past), f"{self.where} (decode)")
        return self.decode(*arrays, *past)


@dataclass
class Generation:
    """What :func:`generate` returns: new token ids, step logits if asked, and timings."""

    tokens: list[int]
    logits: list[np.ndarray] = field(default_factory=list)
    first_token_seconds: float = 0.0
    decode_seconds: float = 0.0

    def decode_tokens_per_second(self) -> float:
        """Tokens after the first one per second of decoding (0 when there were none)."""
        steps = len(self.tokens) - 1
        return steps / self.decode_seconds if steps > 0 and self.decode_seconds > 0 else 0.0


def generate(
    stepper: Stepper,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    stop_at_eos: bool = True,
    keep_logits: bool = False,
) -> Generation:
    """Generate up to ``max_new_tokens`` ids after ``prompt_ids`` (see the module docstring).

    Raises:
        kd_convert.errors.ExportConfigError: an empty prompt or a bad sampling setting.
        kd_convert.errors.ValidationError: prompt + new tokens exceed the cache.

    >>> import tempfile
    >>> from kd_train.testing import save_tiny_llama
    >>> from kd_convert.generate import generate, reference_stepper
    >>> from kd_convert.wrapper import load_student
    >>> stepper = reference_stepper(load_student(save_tiny_llama(tempfile.mkdtemp())), 64)
    >>> len(generate(stepper, [5, 6, 7], 4, stop_at_eos=False).tokens)
    4
    """
    n = len(prompt_ids)
    if n == 0 or max_new_tokens < 1:
        raise ExportConfigError("generate needs a non-empty prompt and max_new_tokens >= 1")
    if do_sample and (temperature <= 0 or not 0 < top_p <= 1):
        raise ExportConfigError(
            f"sampling needs temperature > 0 and 0 < top_p <= 1 (got {temperature}, {top_p})"
        )
    length = max(n, stepper.min_prefill)
    check_cache_length(length + max_new_tokens, stepper.max_length)
    ids = np.full((1, length), stepper.pad_token_id, dtype=np.int32)
    ids[0, :n] = prompt_ids
    mask = np.zeros((1, length), dtype=np.int32)
    mask[0, :n] = 1
    generator = torch.Generator().manual_seed(seed)
    result = Generation([])
    start = time.perf_counter()
    logits, *cache = stepper.run_prefill(ids, mask)
    row = logits[0, n - 1]
    for step in range(max_new_tokens):
        token = choose(row, do_sample, temperature, top_p, generator)
        if step == 0:
            result.first_token_seconds = time.perf_counter() - start
        result.tokens.append(token)
        if keep_logits:
            result.logits.append(np.array(row, dtype=np.float32))
        if (stop_at_eos and token in stepper.eos_token_id) or step == max_new_tokens - 1:
            break
        mask = np.concatenate([mask, np.ones((1, 1), dtype=np.int32)], axis=1)
        logits, *cache = stepper.run_decode(token, mask, n + step, cache)
        row = logits[0, -1]
    result.decode_seconds = time.perf_counter() - start - result.first_token_seconds
    return result


def choose(
    logits: np.ndarray,
    do_sample: bool,
    temperature: float,
    top_p: float,
    generator: torch.Generator,
) -> int:
    """Pick the next id from one row of logits: argmax, or a top-p sample at ``temperature``.

    Top-p keeps the smallest set of most likely ids whose probability reaches ``top_p``
    (the most likely id always stays), as ``transformers``' ``TopPLogitsWarper`` does.

    >>> import numpy as np, torch
    >>> from kd_convert.generate import choose
    >>> choose(np.array([0.0, 3.0, 1.0]), False, 1.0, 1.0, torch.Generator())
    1
    >>> choose(np.array([0.0, 3.0, 1.0]), True, 1.0, 0.1, torch.Generator().manual_seed(0))
    1
    """
    if not do_sample:
        return int(np.argmax(logits))
    scores = torch.from_numpy(np.asarray(logits, dtype=np.float32)) / temperature
    if top_p < 1.0:
        ordered, order = torch.sort(scores, descending=False)
        cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= 1 - top_p
        remove[-1] = False
        scores = scores.masked_fill(remove.scatter(0, order, remove), float("-inf"))
    return int(torch.multinomial(scores.softmax(dim=-1), 1, generator=generator).item())


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Return the prompt ids ``transformers`` would feed: ``tokenizer(text)["input_ids"]``."""
    return list(tokenizer(text)["input_ids"])


def eos_ids(value: int | Sequence[int] | None) -> tuple[int, ...]:
    """Normalise a ``generation_config.eos_token_id`` (an id, a list or ``None``) to a tuple.

    >>> from kd_convert.generate import eos_ids
    >>> eos_ids(2), eos_ids([2, 7]), eos_ids(None)
    ((2,), (2, 7), ())
    """
    if value is None:
        return ()
    return (int(value),) if isinstance(value, int) else tuple(int(v) for v in value)


def reference_stepper(model: PreTrainedModel, max_length: int) -> Stepper:
    """Return the PyTorch reference: the eager prefill/decode wrappers over ``model``."""
    prefill, decode = PrefillWrapper(model), DecodeWrapper(model)
    config = model.generation_config
    return Stepper(
        _torch_graph(prefill),
        _torch_graph(decode),
        max_length,
        eos_token_id=eos_ids(config.eos_token_id),
        pad_token_id=int(config.pad_token_id or 0),
    )


def load_stepper(
    out_dir: str | Path,
    contract: Contract | None = None,
    *,
    threads: int | None = None,
    trust_artifact: bool = False,
) -> Stepper:
    """Return the stepper of a generation export directory (read with its contract).

    ``threads`` caps the runtime's threads where it has its own (onnxruntime);
    ``trust_artifact`` lets a pickled format (``torch.export``) load. The files must hash as
    the contract says, and every call is checked against the contract's inputs.

    Raises:
        kd_convert.errors.ContractError: the directory holds no generation export, or its
            files do not match the contract.
        kd_convert.errors.UntrustedArtifactError: a pickled format without ``trust_artifact``.
        kd_convert.formats.base.RuntimeUnavailableError: the runtime does not exist here.
    """
    base = Path(out_dir)
    found = contract or read_contract(base)
    if found.task != "generation" or found.cache is None:
        raise ContractError(
            f"{base} holds a {found.task!r} export: export it with 'kd-convert export "
            "--for generation' to generate from it"
        )
    module = format_module(found.format)
    if not hasattr(module, "load_graph") and not hasattr(module, "load_stateful"):
        raise ExportConfigError(f"format {found.format!r} has no generation runtime")
    problems = file_problems(base, found)
    if problems:
        raise ContractError(f"{base} does not match its contract: " + "; ".join(problems))
    tokens = found.special_tokens or {}
    trust = {"trust_artifact": trust_artifact}
    if "stateful" in found.graphs:  # Core ML: one graph, the cache in its states
        artifact = found.graphs["stateful"].artifact
        prefill, decode = module.load_stateful(base / artifact, **trust)
        inputs = input_specs(found, artifact), input_specs(found, artifact)
    else:
        names = found.graphs["prefill"].artifact, found.graphs["decode"].artifact
        prefill = module.load_graph(base / names[0], threads, **trust)
        decode = module.load_graph(base / names[1], threads, **trust)
        inputs = input_specs(found, names[0]), input_specs(found, names[1])
    return Stepper(
        prefill,
        decode,
        int(found.cache["max_length"]),
        eos_token_id=eos_ids(tokens.get("eos_token_id")),
        pad_token_id=int(tokens.get("pad_token_id") or 0),
        inputs=inputs,
        where=str(base),
    )


def _torch_graph(module: torch.nn.Module) -> Graph:
    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            out = module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
        return [t.numpy() for t in out]

    return run
