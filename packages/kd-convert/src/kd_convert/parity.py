"""Golden-vector parity: the export against the unmodified ``transformers`` model.

For each enumerated length ``T`` a fixed input is built (seeded random ids, the last
``T // 4`` positions padded) and both sides run:

* reference: the unmodified model on the ``n`` real tokens only (int64, as users call it);
* export: the runtime of the format on the padded int32 ``[B, T]`` input, logits ``[:, :n]``.

Two figures per case, over the real positions (rows of ``V`` logits)::

    cosine  = min over positions of  <r, e> / (|r| |e|)       (must be >= threshold.cosine)
    max_abs = max over positions and vocab of |r - e|          (must be <= threshold.max_abs)

Thresholds are per format (:data:`THRESHOLDS`): fp32 graphs must agree to float round-off;
Core ML computes in fp16, hence a looser max-abs.

A generation export adds *token-level* parity (:func:`check_token_parity`): greedy
generation of :data:`PARITY_NEW_TOKENS` new ids from each of several seeded prompts, by
``transformers`` ``generate(do_sample=False)`` and by the export's generate loop, with ``eos``
ignored on both sides so every prompt runs the full length. The ids must be identical and the
logits of every step within the format's threshold (compared up to the first differing id,
after which the two sides no longer see the same input).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

import numpy as np
import torch
from transformers import PreTrainedModel

from kd_convert.formats.base import Runner
from kd_convert.generate import Stepper, generate
from kd_convert.spec import ExportSpec

Status = Literal["passed", "failed", "needs macOS"]


@dataclass(frozen=True)
class Threshold:
    """Parity bounds: minimum per-position cosine similarity and maximum absolute difference."""

    cosine: float
    max_abs: float


#: Parity bounds per format; ``"coreml+int8"`` applies to int8-quantized Core ML packages.
THRESHOLDS = {
    "torchscript": Threshold(cosine=0.999, max_abs=1e-4),
    "exported": Threshold(cosine=0.999, max_abs=1e-4),
    "onnx": Threshold(cosine=0.999, max_abs=1e-3),
    "coreml": Threshold(cosine=0.999, max_abs=5e-2),
    "coreml+int8": Threshold(cosine=0.99, max_abs=0.5),
    # QAT students (the reference is the torchao fake-quant model): PyTorch graphs compute the
    # same numbers; onnxruntime's fused quantized kernels sum in another order, so an
    # activation now and then rounds to the neighbouring int8 step
    "torchscript+qat": Threshold(cosine=0.999, max_abs=1e-4),
    "exported+qat": Threshold(cosine=0.999, max_abs=1e-4),
    "onnx+qat": Threshold(cosine=0.999, max_abs=2e-2),
    "coreml+qat": Threshold(cosine=0.99, max_abs=0.5),
}


def threshold_for(spec: ExportSpec) -> Threshold:
    """Return the parity bounds of ``spec``'s format (and quantization).

    >>> from kd_convert.parity import threshold_for
    >>> from kd_convert.spec import ExportSpec
    >>> threshold_for(ExportSpec("onnx")).max_abs
    0.001
    """
    key = f"{spec.format}+{spec.quantize}" if spec.quantize else spec.format
    if spec.qat is not None:
        key = f"{spec.format}+qat"
    return THRESHOLDS[key]


@dataclass(frozen=True)
class GoldenCase:
    """One fixed input: int32 ``input_ids``/``attention_mask`` ``[B, T]`` with ``n`` real tokens."""

    length: int
    n_real: int
    input_ids: np.ndarray
    attention_mask: np.ndarray


def golden_cases(spec: ExportSpec, vocab_size: int, pad_id: int, seed: int = 0) -> list[GoldenCase]:
    """Return one padded case per enumerated length (same seed, same inputs, every run).

    >>> from kd_convert.parity import golden_cases
    >>> from kd_convert.spec import ExportSpec
    >>> [(c.length, c.n_real) for c in golden_cases(ExportSpec("onnx", (8, 16)), 50, 0)]
    [(8, 6), (16, 12)]
    """
    rng = np.random.default_rng(seed)
    cases = []
    for length in spec.seq_lengths:
        n_real = max(1, length - length // 4)
        ids = rng.integers(0, vocab_size, size=(spec.batch_size, length)).astype(np.int32)
        mask = np.zeros((spec.batch_size, length), dtype=np.int32)
        mask[:, :n_real] = 1
        ids[:, n_real:] = pad_id
        cases.append(GoldenCase(length, n_real, ids, mask))
    return cases


@dataclass(frozen=True)
class CaseResult:
    """Parity figures of one golden case."""

    length: int
    n_real: int
    cosine: float
    max_abs: float
    passed: bool


#: New tokens per prompt of the token-level parity check.
PARITY_NEW_TOKENS = 64
#: Lengths of the seeded prompts of the token-level parity check.
PARITY_PROMPT_LENGTHS = (3, 8, 17)


@dataclass(frozen=True)
class PromptResult:
    """Token-level parity of one prompt: ids identical, and the worst step logits."""

    prompt_length: int
    new_tokens: int
    identical: bool
    first_mismatch: int | None
    cosine: float
    max_abs: float
    passed: bool


@dataclass(frozen=True)
class TokenParity:
    """Token-level parity of a generation export (see the module docstring)."""

    new_tokens: int
    prompts: list[PromptResult]
    passed: bool


@dataclass(frozen=True)
class ParityReport:
    """Parity of one export: the status, the bounds applied and one result per case.

    ``status`` is ``"needs macOS"`` (never ``"passed"``) when the format's runtime is not
    available here; ``results`` is then empty. A generation export's ``results`` are golden
    cases of its prefill graph and ``tokens`` its token-level parity.
    """

    format: str
    status: Status
    threshold: Threshold
    results: list[CaseResult]
    note: str = ""
    tokens: TokenParity | None = None

    def to_json(self) -> dict[str, object]:
        """Return a JSON-ready dict."""
        return asdict(self)


def reference_logits(model: PreTrainedModel, case: GoldenCase) -> np.ndarray:
    """Run the unmodified model on the real tokens of ``case``; return ``[B, n, V]`` float32."""
    ids = torch.from_numpy(case.input_ids[:, : case.n_real]).long()
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    return np.asarray(logits.float().numpy())


def compare(reference: np.ndarray, exported: np.ndarray) -> tuple[float, float]:
    """Return ``(min per-position cosine, max abs difference)`` of two ``[..., V]`` arrays.

    >>> import numpy as np
    >>> from kd_convert.parity import compare
    >>> a = np.array([[1.0, 0.0], [0.0, 2.0]])
    >>> compare(a, a + 0.5)[1]
    0.5
    """
    ref = reference.reshape(-1, reference.shape[-1]).astype(np.float64)
    out = exported.reshape(-1, exported.shape[-1]).astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cosine = (ref * out).sum(axis=1) / np.maximum(norms, 1e-12)
    return float(cosine.min()), float(np.abs(ref - out).max())


def check_parity(
    model: PreTrainedModel, runner: Runner, spec: ExportSpec, cases: list[GoldenCase]
) -> ParityReport:
    """Run every case through ``runner`` and the reference; return the report."""
    bounds = threshold_for(spec)
    results = []
    for case in cases:
        exported = runner(case.input_ids, case.attention_mask)[:, : case.n_real]
        cosine, max_abs = compare(reference_logits(model, case), exported)
        ok = cosine >= bounds.cosine and max_abs <= bounds.max_abs
        results.append(CaseResult(case.length, case.n_real, cosine, max_abs, ok))
    status: Status = "passed" if all(r.passed for r in results) else "failed"
    return ParityReport(spec.format, status, bounds, results)


def needs_macos(spec: ExportSpec, reason: str) -> ParityReport:
    """Return the report for an export whose runtime only exists on macOS."""
    return ParityReport(spec.format, "needs macOS", threshold_for(spec), [], note=reason)


def parity_prompts(vocab_size: int, bos_token_id: int | None, seed: int = 0) -> list[list[int]]:
    """Return the seeded prompts of the token-level check (``bos`` first when the model has one).

    >>> from kd_convert.parity import parity_prompts
    >>> [len(p) for p in parity_prompts(50, 1)]
    [3, 8, 17]
    """
    rng = np.random.default_rng(seed)
    prompts = []
    for length in PARITY_PROMPT_LENGTHS:
        ids = rng.integers(4, vocab_size, size=length).tolist()
        if bos_token_id is not None:
            ids[0] = bos_token_id
        prompts.append([int(i) for i in ids])
    return prompts


def reference_generation(
    model: PreTrainedModel, prompt: list[int], new_tokens: int
) -> tuple[list[int], list[np.ndarray]]:
    """Greedy ``transformers`` generation without ``eos``: the new ids and each step's logits."""
    ids = torch.tensor([prompt], dtype=torch.long)
    with torch.no_grad():
        out = cast(Any, model).generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=new_tokens,
            eos_token_id=None,
            output_logits=True,
            return_dict_in_generate=True,
        )
    tokens = out.sequences[0, len(prompt) :].tolist()
    return tokens, [step[0].float().numpy() for step in out.logits]


def check_token_parity(
    model: PreTrainedModel,
    stepper: Stepper,
    bounds: Threshold,
    new_tokens: int = PARITY_NEW_TOKENS,
    prompts: list[list[int]] | None = None,
) -> TokenParity:
    """Generate greedily from each prompt with ``transformers`` and ``stepper``; compare.

    ``new_tokens`` is capped so that the longest prompt fits the stepper's cache.
    """
    chosen = prompts or parity_prompts(model.config.vocab_size, model.config.bos_token_id)
    longest = max(max(len(p), stepper.min_prefill) for p in chosen)
    count = max(1, min(new_tokens, stepper.max_length - longest))
    results = []
    for prompt in chosen:
        want, want_logits = reference_generation(model, prompt, count)
        got = generate(stepper, prompt, count, stop_at_eos=False, keep_logits=True)
        mismatch = next(
            (i for i, (a, b) in enumerate(zip(want, got.tokens, strict=False)) if a != b), None
        )
        upto = len(want) if mismatch is None else mismatch + 1
        cosine, max_abs = compare(np.stack(want_logits[:upto]), np.stack(got.logits[:upto]))
        identical = want == got.tokens
        ok = identical and cosine >= bounds.cosine and max_abs <= bounds.max_abs
        results.append(
            PromptResult(len(prompt), len(want), identical, mismatch, cosine, max_abs, ok)
        )
    return TokenParity(count, results, all(r.passed for r in results))
