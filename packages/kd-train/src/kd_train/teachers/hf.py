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
:meth:`HFTeacher.log_probs` return ``[B, T, V]`` float32 and :meth:`HFTeacher.topk` a top-k
:class:`~kd_train.teachers.base.TeacherOutput` of ``[B, T, k]`` with its exact tail.
Position ``t`` is the distribution of the token after ``input_ids[:, t]``. Batches are
right-padded (``attention_mask`` 1 then 0); values at padded positions are meaningless and
must be masked by the caller.

**In training** (the teacher protocol, ``teacher(batch)``) the teacher returns its
final hidden states and its ``lm_head`` instead of logits, so the loss makes the teacher's
logits one chunk at a time, like the student's. That holds for models whose logits are
exactly ``lm_head(base_model(x))`` (Llama, Qwen2, GPT-2, ...); it is checked once on a
short probe, and a model that scales or caps its logits (Gemma's soft-capping, say) is
served dense instead. With ``k`` set it serves top-``k`` with the exact tail.

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

import dataclasses
from pathlib import Path
from typing import Any

import torch

from kd_train.data.batching import Batch
from kd_train.errors import KDTrainError
from kd_train.teachers.base import TeacherOutput
from kd_train.teachers.cached import topk_with_tail
from kd_train.teachers.fingerprint import weights_fingerprint
from kd_train.teachers.tokens import model_location

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

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        source: Path | None = None,
        k: int | None = None,
        layers: bool = False,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.source = source
        #: Top-``k`` served by ``teacher(batch)``; ``None``: dense (hidden states + ``lm_head``).
        self.k = k
        #: Return every layer's hidden states too (hidden-state matching).
        self.layers = layers
        self._fingerprint: str | None = None
        self._splits: bool | None = None

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        trust_remote_code: bool = False,
        gguf_file: str | None = None,
        k: int | None = None,
        layers: bool = False,
    ) -> HFTeacher:
        """Load a teacher and its tokenizer from a local directory.

        Args:
            path: a directory written by ``save_pretrained`` (or holding ``gguf_file``), or
                a model's ``.gguf`` file.
            dtype: weight dtype, a key of :data:`DTYPES` (``"bfloat16"`` halves memory;
                log-probs are still computed in float32).
            device: where the model runs, e.g. ``"cpu"`` or ``"cuda:0"``.
            trust_remote_code: run Python code shipped with the model. Off by default;
                turn it on only for a model whose code you have read.
            gguf_file: name of a GGUF file inside ``path`` to load instead of safetensors.
            k: serve top-``k`` in training (default: dense).
            layers: also return every layer's hidden states in training.

        Raises:
            TeacherLoadError: the path is missing, the dtype unknown, or the directory
                does not hold a causal LM that ``AutoModelForCausalLM`` can load.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        root = Path(path)
        if gguf_file is None and root.suffix == ".gguf" and root.is_file():
            root, gguf_file = model_location(root)
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
        source = root if gguf_file is None else root / gguf_file  # its fingerprint: the file
        return cls(model.to(device), tokenizer, source=source, k=k, layers=layers)

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
        return self._forward(self.model, input_ids, attention_mask, layers=False).logits.float()

    def log_probs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Return full-vocabulary log-probs ``log_softmax(logits.float())``, ``[B, T, V]``.

        This is the dense teacher the trainer's dense KD path uses.
        """
        return torch.log_softmax(self.logits(input_ids, attention_mask), dim=-1)

    def topk(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int) -> TeacherOutput:
        """Return the ``k`` most likely next tokens and their float32 log-probs, ``[B, T, k]``.

        Log-probs are normalised over the whole vocabulary (computed by
        :meth:`log_probs`), sorted in decreasing order; ``tail`` is the exact log of the
        mass outside them (:func:`~kd_train.teachers.cached.topk_with_tail`).

        Raises:
            kd_train.errors.KDTrainError: ``k`` is not in ``1..vocab_size``.
        """
        self._check_k(k)
        return topk_with_tail(self.log_probs(input_ids, attention_mask), k)

    @torch.no_grad()
    def __call__(self, batch: Batch) -> TeacherOutput:
        """The teacher protocol: hidden states + ``lm_head`` (or top-``k``) for a batch."""
        input_ids, attention_mask = batch.input_ids, batch.attention_mask
        if self.k is not None:
            self._check_k(self.k)
        # One forward pass: the whole model for top-k or a head that is not plain linear,
        # else the base model (its logits are made per chunk from hidden states + head).
        dense = self.k is not None or not self.splits()
        module = self.model if dense else self.model.base_model
        out = self._forward(module, input_ids, attention_mask, layers=self.layers)
        layers = tuple(h.float() for h in out.hidden_states) if self.layers else ()
        if self.k is not None:
            top = topk_with_tail(torch.log_softmax(out.logits.float(), dim=-1), self.k)
            return dataclasses.replace(top, layers=layers)
        if dense:
            return TeacherOutput(logits=out.logits.float(), layers=layers)
        head = self.model.get_output_embeddings()
        return TeacherOutput(
            hidden=out.last_hidden_state,
            head_weight=head.weight,
            head_bias=getattr(head, "bias", None),
            layers=layers,
        )

    def splits(self) -> bool:
        """True when the logits are exactly ``lm_head(base_model(x))`` (checked once)."""
        if self._splits is None:
            self._splits = logits_split(self.model)
        return self._splits

    def _check_k(self, k: int) -> None:
        if not 1 <= k <= self.vocab_size:
            raise KDTrainError(f"top-k needs 1 <= k <= vocab size {self.vocab_size}, got k={k}")

    def _forward(
        self, module: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, layers: bool
    ) -> Any:
        """Run ``module`` (the model or its base model) on the batch, on the teacher's device."""
        _check_batch(input_ids, attention_mask)
        return module(
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device),
            use_cache=False,
            output_hidden_states=layers,
        )


@torch.no_grad()
def logits_split(model: Any) -> bool:
    """True when ``model``'s logits equal ``lm_head(base_model(x).last_hidden_state)``.

    Checked on a short probe in float32: the chunked loss rebuilds the logits from the
    hidden states and the head, which is only right for a plain linear head (no logit
    scaling or soft-capping).
    """
    head = model.get_output_embeddings()
    base = getattr(model, "base_model", None)
    if head is None or base is None or base is model or not hasattr(head, "weight"):
        return False
    device = next(model.parameters()).device
    probe = torch.arange(1, 9, device=device).remainder(int(head.weight.shape[0])).unsqueeze(0)
    mask = torch.ones_like(probe)
    was_training = model.training
    model.eval()
    try:
        full = model(input_ids=probe, attention_mask=mask, use_cache=False).logits.float()
        hidden = base(input_ids=probe, attention_mask=mask, use_cache=False).last_hidden_state
        rebuilt = head(hidden).float()
    finally:
        model.train(was_training)
    return bool(full.shape == rebuilt.shape and torch.allclose(full, rebuilt, atol=1e-5, rtol=1e-5))


def _check_batch(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        raise KDTrainError(
            "a teacher takes input_ids and attention_mask of the same shape [B, T]; got "
            f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
        )
