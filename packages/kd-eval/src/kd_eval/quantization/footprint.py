"""Size on disk and onnxruntime latency of an exported student, measured from its ONNX file.

``file_bytes``: the ``.onnx`` file plus every external-data file its initializers point to
(each counted once). ``weight_bytes``: the bytes of the graph's initializers (the weights,
and a quantized export's integer weights and scales), ``Π dims × itemsize`` of each, read
from the graph without loading external data. ``latency_ms``: the median of ``runs`` timed
onnxruntime runs of one sequence of ``length`` token ids (batch 1, one thread, after
``warmup`` untimed runs), through :class:`kd_eval.bench.runners.ONNXRunner`, whose inputs
are checked against the export's ``contract.json`` when one is beside the file (which also
re-hashes the files: a swapped or damaged export is refused, never measured).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kd_eval.bench.runners import CONTRACT_FILE, ONNXRunner, contract_for
from kd_eval.errors import ConfigError

#: Untimed onnxruntime runs before the timed ones.
WARMUP_RUNS = 3


def resolve_onnx(path: Path, name: str) -> Path:
    """The ``.onnx`` file of ``--onnx NAME=PATH``: the file itself or an export directory's.

    Raises:
        ConfigError: ``path`` does not exist, or is neither an ``.onnx`` file nor a
            ``kd-convert export`` directory of one.
    """
    where = f"--onnx {name}={path}"
    if path.is_dir():
        contract = path / CONTRACT_FILE
        try:
            artifact = str(json.loads(contract.read_text(encoding="utf-8"))["artifact"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{where}: a directory without a readable {CONTRACT_FILE} ({exc}); pass the "
                "kd-convert export directory or its .onnx file"
            ) from exc
        path = path / artifact
    if not path.is_file():
        raise ConfigError(f"{where}: no such file; pass the .onnx file kd-convert export wrote")
    if path.suffix != ".onnx":
        raise ConfigError(f"{where}: not an .onnx file; export the student with --format onnx")
    return path


def onnx_size(path: Path) -> dict[str, int]:
    """``file_bytes`` (model + external data) and ``weight_bytes`` (initializers) of ``path``."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    external: set[str] = set()
    weight_bytes = 0
    for tensor in model.graph.initializer:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        weight_bytes += int(np.prod(tensor.dims, dtype=np.int64)) * itemsize
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entries = {entry.key: entry.value for entry in tensor.external_data}
            external.add(entries["location"])
    file_bytes = path.stat().st_size + sum((path.parent / f).stat().st_size for f in external)
    return {"file_bytes": file_bytes, "weight_bytes": weight_bytes}


def onnx_latency(path: Path, length: int, runs: int) -> dict[str, Any]:
    """Median onnxruntime latency (ms) of one ``length``-token sequence, one thread.

    Raises:
        kd_eval.errors.BenchError: the file does not load, does not match its contract, or
            refuses a sequence of ``length`` tokens (e.g. not an exported length).
    """
    runner = ONNXRunner(path, threads=1, specs=contract_for(path))
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(0, runner.vocab_size, (1, length)))
    for _ in range(WARMUP_RUNS):
        runner.logits(ids)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        runner.logits(ids)
        times.append((time.perf_counter() - started) * 1e3)
    return {"latency_ms": statistics.median(times), "runs": runs, "length": length, "threads": 1}


def onnx_figures(path: Path, length: int, runs: int) -> dict[str, Any]:
    """Size and latency of one ONNX file (see the module docstring)."""
    return {"file": str(path), **onnx_size(path), **onnx_latency(path, length, runs)}
