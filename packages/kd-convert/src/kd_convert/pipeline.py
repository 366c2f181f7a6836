"""One export, start to finish: load, validate, convert, contract, parity.

>>> import tempfile
>>> from kd_train.testing import save_tiny_llama
>>> from kd_convert.pipeline import export_model
>>> from kd_convert.spec import ExportSpec
>>> model_dir = save_tiny_llama(tempfile.mkdtemp())
>>> result = export_model(model_dir, tempfile.mkdtemp(), ExportSpec("exported", (8, 16)))
>>> result.parity.status
'passed'
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from kd_train.atomic import atomic_write_text
from kd_train.cliutil import progress_bar

from kd_convert.contract import (
    PARITY_FILE,
    Contract,
    build_contract,
    build_generation_contract,
    checked_runner,
    expected_io,
    generation_graphs,
    tensor_specs,
    write_contract,
)
from kd_convert.errors import ExportConfigError
from kd_convert.fingerprint import source_fingerprint, tokenizer_fingerprint
from kd_convert.formats import format_module
from kd_convert.formats.base import RuntimeUnavailableError
from kd_convert.generate import load_stepper
from kd_convert.parity import (
    ParityReport,
    Status,
    check_parity,
    check_token_parity,
    golden_cases,
    needs_macos,
)
from kd_convert.quantized import load_qat_student
from kd_convert.spec import ExportSpec
from kd_convert.stateful import DecodeWrapper, PrefillWrapper, StatefulWrapper, cache_layout
from kd_convert.validate import validate, validate_generation, validate_stateful
from kd_convert.wrapper import ExportWrapper, load_student

if TYPE_CHECKING:
    import numpy as np
    from transformers import PreTrainedModel

STAGES = ("load", "validate", "convert", "contract", "parity")


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` produced: paths, contract, parity and seconds per stage."""

    out_dir: Path
    artifact: Path
    contract: Contract
    parity: ParityReport
    seconds: dict[str, float]


def export_model(
    model_dir: str | Path, out_dir: str | Path, spec: ExportSpec, *, progress: bool = False
) -> ExportResult:
    """Export the student saved in ``model_dir`` to ``out_dir`` as ``spec.format``.

    Writes the artifact, ``contract.json`` and ``parity.json`` (all atomically). With
    ``spec.task == "generation"`` the artifacts are a prefill and a decode graph
    (:mod:`kd_convert.stateful`); ``ExportResult.artifact`` is then the prefill graph. A
    QAT student (``quantization.json`` beside its weights) is exported with its integer
    weights and scales and compared with its torchao fake-quant model
    (:mod:`kd_convert.quantized`); ``contract.json`` records its scheme.

    Raises:
        kd_convert.errors.UnsupportedModelError: the wrapper cannot load or drive the model.
        kd_convert.errors.ValidationError: a pre-conversion check failed (nothing written).
        kd_convert.errors.ConversionError: the converter failed.
    """
    out = Path(out_dir)
    module = format_module(spec.format)
    seconds: dict[str, float] = {}
    with progress_bar(total=len(STAGES), desc=f"export {spec.format}", enabled=progress) as bar:

        @contextmanager
        def stage(name: str) -> Iterator[None]:
            bar.set_postfix_str(name)
            start = time.perf_counter()
            yield
            seconds[name] = time.perf_counter() - start
            bar.update()

        with stage("load"):
            quantized = load_qat_student(model_dir)
            if quantized is not None:  # export its integer weights, compare with torchao's
                spec = replace(spec, qat=quantized.record.scheme)
            if spec.task == "generation":
                return _export_generation(Path(model_dir), out, spec, stage, seconds)
            model = load_student(model_dir) if quantized is None else quantized.reference
            _check_lengths(spec, model.config.max_position_embeddings)
            wrapper = ExportWrapper(model if quantized is None else quantized.export_model)
        with stage("validate"):
            program = validate(wrapper, spec)
        with stage("convert"):
            artifact = out / module.ARTIFACT
            module.export(wrapper, program, spec, artifact)
        with stage("contract"):
            opset = module.describe(artifact).opset if spec.format == "onnx" else None
            contract = build_contract(
                out,
                spec,
                model.config.vocab_size,
                source_fingerprint(model_dir),
                tokenizer_fingerprint(model_dir),
                opset=opset,
                quantization=None if quantized is None else quantized.summary(),
            )
            write_contract(out, contract)
        with stage("parity"):
            parity = run_parity(model, artifact, spec, model.config.pad_token_id)
            atomic_write_text(out / PARITY_FILE, json.dumps(parity.to_json(), indent=2) + "\n")
    return ExportResult(out, artifact, contract, parity, seconds)


def _export_generation(
    model_dir: Path,
    out: Path,
    spec: ExportSpec,
    stage: Callable[[str], AbstractContextManager[None]],
    seconds: dict[str, float],
) -> ExportResult:
    """The generation branch of :func:`export_model`: prefill + decode graphs, one contract."""
    module = format_module(spec.format)
    with stage("load"):
        model = load_student(model_dir)
        max_positions = model.config.max_position_embeddings
        _check_lengths(spec, max_positions)
        max_length = spec.max_length or max_positions
        if max_length > max_positions:
            raise ExportConfigError(
                f"max_length {max_length} exceeds the model's max_position_embeddings "
                f"({max_positions}): choose --max-length <= {max_positions}"
            )
        layout = cache_layout(model, max_length)
        if spec.format == "coreml":  # Core ML states are fp16
            layout = replace(layout, dtype="float16")
    graphs = generation_graphs(spec, layout, model.config.vocab_size)
    if spec.format == "coreml":
        with stage("validate"):
            program = validate_stateful(StatefulWrapper(model, layout, spec.batch_size), spec)
        with stage("convert"):
            module.export_stateful(program, spec, layout, out / graphs["stateful"].artifact)
    else:
        wrappers = PrefillWrapper(model), DecodeWrapper(model)
        with stage("validate"):
            programs = validate_generation(*wrappers, spec, layout)
        with stage("convert"):
            for name, wrapper, program in zip(graphs, wrappers, programs, strict=True):
                graph = graphs[name]
                names = [t.name or "" for t in graph.inputs], [t.name or "" for t in graph.outputs]
                module.export(wrapper, program, spec, out / graph.artifact, names=names)
    with stage("contract"):
        prefill_path = out / next(iter(graphs.values())).artifact
        opset = module.describe(prefill_path).opset if spec.format == "onnx" else None
        config = model.generation_config
        special = {
            "bos_token_id": config.bos_token_id,
            "eos_token_id": config.eos_token_id,
            "pad_token_id": config.pad_token_id,
        }
        sources = source_fingerprint(model_dir), tokenizer_fingerprint(model_dir)
        contract = build_generation_contract(
            out, spec, layout, model.config.vocab_size, sources, special, opset=opset
        )
        write_contract(out, contract)
    with stage("parity"):
        parity = generation_parity(model, out, contract, spec)
        atomic_write_text(out / PARITY_FILE, json.dumps(parity.to_json(), indent=2) + "\n")
    return ExportResult(out, prefill_path, contract, parity, seconds)


def generation_parity(
    model: PreTrainedModel, out_dir: Path, contract: Contract, spec: ExportSpec
) -> ParityReport:
    """Golden vectors through the prefill graph, then token-level parity of the generate loop."""
    try:  # kd wrote these files a moment ago in this process: they are trusted
        stepper = load_stepper(out_dir, contract, trust_artifact=True)
    except RuntimeUnavailableError as exc:
        return needs_macos(spec, str(exc))
    pad_id = model.config.pad_token_id or 0

    def prefill_logits(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return stepper.run_prefill(input_ids, attention_mask)[0]

    golden = golden_cases(spec, model.config.vocab_size, pad_id)
    report = check_parity(model, prefill_logits, spec, golden)
    tokens = check_token_parity(model, stepper, report.threshold)
    status: Status = "passed" if report.status == "passed" and tokens.passed else "failed"
    return ParityReport(spec.format, status, report.threshold, report.results, tokens=tokens)


def run_parity(model: object, artifact: Path, spec: ExportSpec, pad_id: int | None) -> ParityReport:
    """Golden-vector parity of ``artifact`` against ``model`` ("needs macOS" where it can't run).

    ``artifact`` is the file :func:`export_model` has just written, so it is loaded trusted;
    every golden input is checked against the inputs the contract promises.
    """
    try:
        runner = format_module(spec.format).load_runner(artifact, trust_artifact=True)
    except RuntimeUnavailableError as exc:
        return needs_macos(spec, str(exc))
    vocab = model.config.vocab_size  # type: ignore[attr-defined]
    runner = checked_runner(runner, tensor_specs(expected_io(spec, vocab)[0]), artifact)
    cases = golden_cases(spec, vocab, pad_id if pad_id is not None else 0)
    return check_parity(model, runner, spec, cases)  # type: ignore[arg-type]


def _check_lengths(spec: ExportSpec, max_positions: int) -> None:
    too_long = [n for n in spec.seq_lengths if n > max_positions]
    if too_long:
        raise ExportConfigError(
            f"sequence lengths {too_long} exceed the model's max_position_embeddings "
            f"({max_positions}): choose lengths <= {max_positions}"
        )
