"""``HFTeacher``: a local ``transformers`` causal LM run in the training loop.

The model is loaded from a directory on disk only (``local_files_only=True``; nothing is
downloaded), with ``trust_remote_code`` off unless the caller turns it on, and put in
eval mode. Every call runs under :func:`torch.no_grad` and returns float32 values: the
log-softmax over the full vocabulary is computed in float32 even when the weights are
bf16, because bf16 keeps only ~3 significant digits and the KD loss compares small
log-prob differences.

``torch.no_grad`` rather than ``torch.inference_mode``: inference tensors cannot be saved
for backward, and the student's loss multiplies teacher log-probs with tensors that need
gradients, so inference tensors would fail in the trainer.

Shapes: ``input_ids`` and ``attention_mask`` are ``[B, T]``; :meth:`HFTeacher.logits` and
:meth:`HFTeacher.log_probs` return ``[B, T, V]`` float32 and :meth:`HFTeacher.topk` a
:class:`~kd_train.teachers.base.TopK` of ``[B, T, k]``. Position ``t`` is the distribution
of the token after ``input_ids[:, t]``. Batches are right-padded (``attention_mask`` 1
then 0); values at padded positions are meaningless and must be masked by the caller.

>>> import tempfile, torch
>>> from kd_train.testing import save_tiny_llama
>>> from kd_train.teachers.hf import HFTeacher
>>> teacher = HFTeacher.from_pretrained(save_tiny_llama(tempfile.mkdtemp(), seed=0))
>>> ids = torch.tensor([[5, 6, 7]])
>>> top = teacher.topk(ids, torch.ones_like(ids), k=4)
>>> tuple(top.ids.shape), bool((top.logprobs.exp().sum(-1) <= 1).all())
((1, 3, 4), True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kd_train.errors import KDTrainError
from kd_train.teachers.base import TopK
from kd_train.teachers.fingerprint import weights_fingerprint

#: Weight dtypes a teacher may be loaded in, by name (the CLI's ``--dtype`` choices).
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


class TeacherLoadError(KDTrainError):
    """A teacher model could not be loaded (missing path, not a causal LM, remote code)."""


class HFTeacher:
    """A local ``transformers`` causal LM as a :class:`~kd_train.teachers.base.Teacher`.

    Args:
        model: a loaded causal LM; it is put in eval mode.
        tokenizer: its tokenizer, when known (``from_pretrained`` loads it).
        source: the directory the model was loaded from, used by :attr:`fingerprint`.
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, source: Path | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.source = source
        self._fingerprint: str | None = None

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        trust_remote_code: bool = False,
        gguf_file: str | None = None,
    ) -> HFTeacher:
        """Load a teacher and its tokenizer from a local directory.

        Args:
            path: a directory written by ``save_pretrained`` (or holding ``gguf_file``).
            dtype: weight dtype, a key of :data:`DTYPES` (``"bfloat16"`` halves memory;
                log-probs are still computed in float32).
            device: where the model runs, e.g. ``"cpu"`` or ``"cuda:0"``.
            trust_remote_code: run Python code shipped with the model. Off by default;
                turn it on only for a model whose code you have read.
            gguf_file: name of a GGUF file inside ``path`` to load instead of safetensors.

        Raises:
            TeacherLoadError: the path is missing, the dtype unknown, or the directory
                does not hold a causal LM that ``AutoModelForCausalLM`` can load.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        root = Path(path)
        if dtype not in DTYPES:
            raise TeacherLoadError(
                f"unknown teacher dtype {dtype!r}; choose one of {', '.join(DTYPES)}"
            )
        if not root.is_dir():
            raise TeacherLoadError(
                f"teacher directory {root} does not exist; pass a directory written by "
                "save_pretrained (config.json + weights + tokenizer)"
            )
        if gguf_file is None and not (root / "config.json").is_file():
            raise TeacherLoadError(
                f"{root} has no config.json, so it is not a saved transformers model; pass "
                "the directory written by save_pretrained (or gguf_file= for a GGUF file)"
            )
        options: dict[str, Any] = {
            "local_files_only": True,
            "trust_remote_code": trust_remote_code,
        }
        if gguf_file is not None:
            options["gguf_file"] = gguf_file
        try:
            model: Any = AutoModelForCausalLM.from_pretrained(root, dtype=DTYPES[dtype], **options)
            tokenizer = AutoTokenizer.from_pretrained(root, **options)
        except (ValueError, OSError, KeyError) as exc:
            hint = (
                " The model ships its own code: pass trust_remote_code=True"
                " (--trust-remote-code) only if you trust it."
                if "trust_remote_code" in str(exc)
                else " kd-train needs a causal language model (AutoModelForCausalLM)."
            )
            raise TeacherLoadError(
                f"cannot load a causal LM teacher from {root}: {str(exc).rstrip('.')}.{hint}"
            ) from exc
        return cls(model.to(device), tokenizer, source=root)

    @property
    def vocab_size(self) -> int:
        """Number of logits per position (the LM head's output size)."""
        head = self.model.get_output_embeddings()
        if head is not None and getattr(head, "weight", None) is not None:
            return int(head.weight.shape[0])
        return int(self.model.config.vocab_size)  # pragma: no cover - models without a head

    @property
    def device(self) -> torch.device:
        """The device the model's parameters live on."""
        return next(self.model.parameters()).device

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the weight files the teacher was loaded from (computed once).

        Raises:
            kd_train.errors.KDTrainError: the teacher was built from an in-memory model
                (no ``source``).
        """
        if self._fingerprint is None:
            if self.source is None:
                raise KDTrainError(
                    "this HFTeacher was built from an in-memory model, so its weights have "
                    "no files to fingerprint; load it with HFTeacher.from_pretrained(path)"
                )
            self._fingerprint = weights_fingerprint(self.source)
        return self._fingerprint

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Return the model's logits as float32 ``[B, T, V]`` (no gradient)."""
        _check_batch(input_ids, attention_mask)
        out = self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device),
            use_cache=False,
        )
        return out.logits.float()

    def log_probs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Return full-vocabulary log-probs ``log_softmax(logits.float())``, ``[B, T, V]``.

        This is the dense teacher the trainer's dense KD path uses.
        """
        return torch.log_softmax(self.logits(input_ids, attention_mask), dim=-1)

    def topk(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int) -> TopK:
        """Return the ``k`` most likely next tokens and their float32 log-probs, ``[B, T, k]``.

        Log-probs are normalised over the whole vocabulary (computed by
        :meth:`log_probs`), sorted in decreasing order; the tail mass is
        ``1 - Σ exp(logprobs)`` (:meth:`~kd_train.teachers.base.TopK.tail_logprob`).

        Raises:
            kd_train.errors.KDTrainError: ``k`` is not in ``1..vocab_size``.
        """
        if not 1 <= k <= self.vocab_size:
            raise KDTrainError(f"top-k needs 1 <= k <= vocab size {self.vocab_size}, got k={k}")
        values, ids = torch.topk(self.log_probs(input_ids, attention_mask), k, dim=-1)
        return TopK(ids=ids, logprobs=values)


def _check_batch(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        raise KDTrainError(
            "a teacher takes input_ids and attention_mask of the same shape [B, T]; got "
            f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
        )
