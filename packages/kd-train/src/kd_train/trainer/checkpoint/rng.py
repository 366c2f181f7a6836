"""Every random generator a run draws from, captured into a checkpoint and restored.

The tensors (torch CPU and CUDA generator states, NumPy's Mersenne Twister keys) go to
``rng.safetensors``; the rest (Python's state, NumPy's position and cached Gaussian) is
plain JSON for ``trainer_state.json``. Nothing is pickled.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from kd_train.trainer.checkpoint.manifest import CheckpointError

#: The Mersenne Twister's key words (NumPy's ``get_state()[1]``).
_MT_WORDS = 624


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return the generators' states as ``(tensors, json_ready_rest)``."""
    np_state: Any = np.random.get_state()
    tensors = {
        "torch_cpu": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
    }
    if torch.cuda.is_available():  # pragma: no cover - CPU-only CI
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    version, internal, gauss = random.getstate()
    rest = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, rest


def restore_rng(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> None:
    """Set every generator back to the states :func:`capture_rng` returned.

    Raises:
        CheckpointError: a tensor is missing or has another dtype or shape than
            :func:`capture_rng` writes (``rest`` is schema-checked by its reader).
    """
    _require_layout(tensors)
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():  # pragma: no cover - CPU-only CI
        states = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
        torch.cuda.set_rng_state_all(states[: torch.cuda.device_count()])
    name, pos, has_gauss, cached = rest["numpy"]
    keys = tensors["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state((name, keys, pos, has_gauss, cached))
    version, internal, gauss = rest["python"]
    random.setstate((version, tuple(internal), gauss))


def _require_layout(tensors: dict[str, torch.Tensor]) -> None:
    expected = {
        "torch_cpu": (torch.uint8, tuple(torch.get_rng_state().shape)),
        "numpy_keys": (torch.int64, (_MT_WORDS,)),
    }
    for name, (dtype, shape) in expected.items():
        tensor = tensors.get(name)
        if tensor is None or tensor.dtype != dtype:
            raise CheckpointError(
                f"checkpoint file rng.safetensors: {name} is missing or not {dtype}"
            )
        if tuple(tensor.shape) != shape:
            raise CheckpointError(
                f"checkpoint file rng.safetensors: {name} has shape {tuple(tensor.shape)}, "
                f"not {shape}"
            )
    for name in tensors:
        if name not in expected and not name.startswith("torch_cuda_"):
            raise CheckpointError(f"checkpoint file rng.safetensors: unknown tensor {name!r}")
