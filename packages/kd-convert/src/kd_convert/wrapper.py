"""Make a ``transformers`` causal LM traceable: int32 inputs, an explicit mask, logits out.

:class:`ExportWrapper` re-drives the model's *own* submodules (token embeddings, rotary
embedding, decoder layers, final norm, ``lm_head``) with tensors it builds itself, so the
graph has no KV-cache objects and none of the mask-creation ops of ``transformers``
(``diff``, ``new_ones``, ``__and__``, int64 ``arange``/``cumsum``) that device converters reject.

The additive attention mask, for ``input_ids`` / ``attention_mask`` of shape ``[B, T]``
(int32, padding on the right, ``attention_mask[b, j] = 1`` for a real token)::

    pos        = arange(T, int32)                              # [T]
    causal[i,j] = float(pos[j] <= pos[i])                      # [T, T]
    allowed    = causal[None, None] * float(attention_mask)[:, None, None, :]   # [B,1,T,T]
    mask       = (1 - allowed) * MASK_VALUE                    # 0 where allowed

``MASK_VALUE = -1e4`` is finite in fp16 and ``exp(-1e4)`` underflows to exactly 0, so masked
keys get zero weight without ``-inf`` arithmetic (no NaN from ``0 * -inf``).
Position ids are ``pos`` (right padding keeps the real tokens at positions ``0..n-1``,
exactly what the unmodified model uses), so logits of real tokens equal the model's.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel

from kd_convert.errors import UnsupportedModelError

#: Additive mask value for a masked key (finite in fp16, exp() underflows to 0).
MASK_VALUE = -1.0e4
#: Submodules of ``model.model`` the wrapper drives (Llama / Qwen2 / Mistral layout).
REQUIRED_SUBMODULES = ("embed_tokens", "layers", "norm", "rotary_emb")
#: Input and output names of every export.
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAMES = ("logits",)


def additive_causal_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Return the ``[B, 1, T, T]`` additive mask for an int32 ``[B, T]`` padding mask.

    Built from comparisons and multiplication only (see the module docstring).

    >>> import torch
    >>> from kd_convert.wrapper import additive_causal_mask
    >>> m = additive_causal_mask(torch.tensor([[1, 1, 0]], dtype=torch.int32), torch.float32)
    >>> (m[0, 0] == 0).int().tolist()
    [[1, 0, 0], [1, 1, 0], [1, 1, 0]]
    """
    length = attention_mask.shape[1]
    pos = torch.arange(length, dtype=torch.int32, device=attention_mask.device)
    causal = (pos[None, :] <= pos[:, None]).to(dtype)
    keys = attention_mask[:, None, None, :].to(dtype)
    allowed = causal[None, None, :, :] * keys
    return (1.0 - allowed) * MASK_VALUE


class ExportWrapper(nn.Module):
    """``(input_ids, attention_mask) -> logits`` over a causal LM's own submodules.

    Args:
        model: a ``transformers`` causal LM whose ``model`` attribute has
            :data:`REQUIRED_SUBMODULES` and whose head is ``lm_head`` (Llama, Qwen2 and
            other GQA decoders of that layout). Load it with ``attn_implementation="eager"``
            (see :func:`load_student`) so attention is plain matmul + softmax.

    Shapes: ``input_ids``, ``attention_mask``: ``[B, T]`` int32 (right padding);
    returns logits ``[B, T, V]`` in the model's dtype.

    >>> import tempfile, torch
    >>> from kd_train.testing import save_tiny_llama
    >>> from kd_convert.wrapper import ExportWrapper, load_student
    >>> model = load_student(save_tiny_llama(tempfile.mkdtemp()))
    >>> ids = torch.tensor([[5, 6, 7, 3]], dtype=torch.int32)
    >>> mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.int32)
    >>> with torch.no_grad():
    ...     logits = ExportWrapper(model)(ids, mask)
    ...     reference = model(ids[:, :3].long()).logits
    >>> bool(torch.allclose(logits[:, :3], reference, atol=1e-5))
    True
    """

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        check_supported(model)
        self.decoder = model.model
        self.lm_head = model.lm_head
        self.eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Return logits ``[B, T, V]`` for int32 ``input_ids`` and ``attention_mask``."""
        hidden = self.decoder.embed_tokens(input_ids)
        mask = additive_causal_mask(attention_mask, hidden.dtype)
        positions = torch.arange(input_ids.shape[1], dtype=torch.int32, device=input_ids.device)
        rotary = self.decoder.rotary_emb(hidden, positions[None, :])
        for layer in self.decoder.layers:
            hidden = layer(hidden, attention_mask=mask, position_embeddings=rotary)
        return self.lm_head(self.decoder.norm(hidden))


def check_supported(model: nn.Module) -> None:
    """Raise :class:`~kd_convert.errors.UnsupportedModelError` unless the wrapper can drive it."""
    name = type(model).__name__
    base = getattr(model, "model", None)
    missing = [m for m in REQUIRED_SUBMODULES if not hasattr(base, m)]
    if base is None or missing or not hasattr(model, "lm_head"):
        raise UnsupportedModelError(
            f"{name} is not a decoder-only causal LM of the Llama/Qwen2 layout: "
            f"model.model lacks {missing or ['model']} or there is no lm_head; "
            "export a LlamaForCausalLM/Qwen2ForCausalLM-style student"
        )
    config = getattr(model, "config", None)
    if "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        raise UnsupportedModelError(
            f"{name} uses sliding-window attention layers, which the export mask does not "
            "model; set use_sliding_window=False in the config or export a full-attention model"
        )
    implementation = getattr(config, "_attn_implementation", "eager")
    if implementation not in ("eager", "sdpa"):
        raise UnsupportedModelError(
            f"{name} uses attn_implementation={implementation!r}; load it with "
            "attn_implementation='eager' (kd_convert.wrapper.load_student does)"
        )


def load_student(model_dir: str | Path) -> PreTrainedModel:
    """Load a saved causal LM for export: float32, eval mode, eager attention, no hub access.

    Raises:
        UnsupportedModelError: the directory holds no loadable causal LM.
    """
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise UnsupportedModelError(
            f"{path} has no config.json: pass the directory a student was saved to with "
            "save_pretrained"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, attn_implementation="eager", dtype=torch.float32, local_files_only=True
        )
    except (OSError, ValueError) as exc:
        raise UnsupportedModelError(f"cannot load a causal LM from {path}: {exc}") from exc
    model.eval()
    return model
