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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from transformers import PreTrainedModel

from kd_convert.formats.base import Runner
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
}


def threshold_for(spec: ExportSpec) -> Threshold:
    """Return the parity bounds of ``spec``'s format (and quantization).

    >>> from kd_convert.parity import threshold_for
    >>> from kd_convert.spec import ExportSpec
    >>> threshold_for(ExportSpec("onnx")).max_abs
    0.001
    """
    key = f"{spec.format}+{spec.quantize}" if spec.quantize else spec.format
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


@dataclass(frozen=True)
class ParityReport:
    """Parity of one export: the status, the bounds applied and one result per case.

    ``status`` is ``"needs macOS"`` (never ``"passed"``) when the format's runtime is not
    available here; ``results`` is then empty.
    """

    format: str
    status: Status
    threshold: Threshold
    results: list[CaseResult]
    note: str = ""

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
