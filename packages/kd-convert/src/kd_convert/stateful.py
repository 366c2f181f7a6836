"""Generation exports: a prefill graph and a decode graph that carry the KV cache as tensors.

Both wrappers re-drive the model's own submodules, as :class:`~kd_convert.wrapper.ExportWrapper`
does, and hand each decoder layer a :class:`TensorCache`: a plain object whose ``update``
concatenates the past keys/values of that layer with the new ones and records the result.
The attention code of ``transformers`` (projections, rotary, GQA ``repeat_kv``, eager softmax)
runs unchanged; the graph holds no ``Cache`` object, only tensors in and out.

I/O follows optimum's ONNX convention (``L`` layers, ``H`` key/value heads, ``D`` head dim;
all ids int32; a GQA student keeps its ``H < num_attention_heads`` cache)::

    prefill: input_ids [B, T], attention_mask [B, T], position_ids [B, T]
             -> logits [B, T, V], present.{i}.key / present.{i}.value [B, H, T, D]
    decode:  input_ids [B, 1], attention_mask [B, P + 1], position_ids [B, 1],
             past_key_values.{i}.key / past_key_values.{i}.value [B, H, P, D]
             -> logits [B, 1, V], present.{i}.key / present.{i}.value [B, H, P + 1, D]

The additive mask of a query at cache position ``P + i`` over key ``j``
(:func:`cached_causal_mask`)::

    allowed[b, i, j] = float(j <= P + i) * float(attention_mask[b, j])
    mask             = (1 - allowed) * MASK_VALUE
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from kd_convert.errors import ValidationError
from kd_convert.wrapper import MASK_VALUE, check_supported

#: Inputs every generation graph starts with (then the past cache, decode only).
STEP_INPUTS = ("input_ids", "attention_mask", "position_ids")
#: Names of the state buffers of :class:`StatefulWrapper` (Core ML ``StateType`` names).
STATE_NAMES = ("key_cache", "value_cache")


@dataclass(frozen=True)
class CacheLayout:
    """Shape of the KV cache: ``layers`` pairs of ``[batch, kv_heads, seq, head_dim]`` tensors.

    Args:
        layers: decoder layers (one key and one value tensor each).
        kv_heads: key/value heads (``num_key_value_heads``; fewer than the query heads in GQA).
        head_dim: width of one head.
        dtype: element type of the cache tensors.
        max_length: the most positions (prompt + generated tokens) the cache may hold.

    >>> from kd_convert.stateful import CacheLayout
    >>> layout = CacheLayout(layers=2, kv_heads=2, head_dim=8, dtype="float32", max_length=64)
    >>> layout.bytes_per_token()
    256
    """

    layers: int
    kv_heads: int
    head_dim: int
    dtype: str
    max_length: int

    def bytes_per_token(self) -> int:
        """Return the cache bytes of one position: ``2 * layers * kv_heads * head_dim * size``."""
        size = torch.empty((), dtype=getattr(torch, self.dtype)).element_size()
        return 2 * self.layers * self.kv_heads * self.head_dim * size

    def to_json(self) -> dict[str, object]:
        """Return a JSON-ready dict (with ``bytes_per_token``; fp16 layouts name the states)."""
        found: dict[str, object] = {**asdict(self), "bytes_per_token": self.bytes_per_token()}
        if self.dtype == "float16":  # the Core ML stateful layout
            found["states"] = list(STATE_NAMES)
        return found


def cache_layout(model: PreTrainedModel, max_length: int) -> CacheLayout:
    """Return the cache layout of ``model`` (float32 exports) holding ``max_length`` positions."""
    config = model.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return CacheLayout(config.num_hidden_layers, kv_heads, head_dim, "float32", max_length)


def past_names(layers: int) -> list[str]:
    """Return ``past_key_values.{i}.key``, ``past_key_values.{i}.value`` for each layer.

    >>> from kd_convert.stateful import past_names
    >>> past_names(1)
    ['past_key_values.0.key', 'past_key_values.0.value']
    """
    return [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]


def present_names(layers: int) -> list[str]:
    """Return ``present.{i}.key``, ``present.{i}.value`` for each layer.

    >>> from kd_convert.stateful import present_names
    >>> present_names(1)
    ['present.0.key', 'present.0.value']
    """
    return [f"present.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]


def cached_causal_mask(
    attention_mask: torch.Tensor, query_length: int, dtype: torch.dtype
) -> torch.Tensor:
    """Return the ``[B, 1, S, P + S]`` additive mask of ``S`` queries after ``P`` cached keys.

    ``attention_mask`` is the int32 ``[B, P + S]`` mask over every key (cache and new).

    >>> import torch
    >>> from kd_convert.stateful import cached_causal_mask
    >>> m = cached_causal_mask(torch.tensor([[1, 0, 1, 1]], dtype=torch.int32), 2, torch.float32)
    >>> (m[0, 0] == 0).int().tolist()
    [[1, 0, 1, 0], [1, 0, 1, 1]]
    """
    keys = attention_mask.shape[1]
    key_pos = torch.arange(keys, dtype=torch.int32, device=attention_mask.device)
    query_pos = key_pos[keys - query_length :]
    causal = (key_pos[None, :] <= query_pos[:, None]).to(dtype)
    allowed = causal[None, None, :, :] * attention_mask[:, None, None, :].to(dtype)
    return (1.0 - allowed) * MASK_VALUE


class TensorCache:
    """The cache object each decoder layer sees: past tensors in, present tensors recorded.

    ``update(key, value, layer_idx)`` is what ``transformers`` attention calls on a cache.
    """

    def __init__(self, past: list[torch.Tensor]) -> None:
        self.past = past
        self.present: list[torch.Tensor] = []

    def update(
        self,
        key: torch.Tensor,
        value: torch.Tensor,
        layer_idx: int,
        *args: object,
        **kwargs: object,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(past + key, past + value)`` along the sequence axis and record them."""
        if self.past:
            key = torch.cat([self.past[2 * layer_idx], key], dim=2)
            value = torch.cat([self.past[2 * layer_idx + 1], value], dim=2)
        self.present += [key, value]
        return key, value


class CachedDecoder(nn.Module):
    """The shared body of :class:`PrefillWrapper` and :class:`DecodeWrapper`.

    :meth:`step` embeds the ids, builds the mask of :func:`cached_causal_mask` and the rotary
    embedding of ``position_ids``, runs every decoder layer with a :class:`TensorCache` over
    ``past`` and returns ``(logits, *present)``.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        check_supported(model)
        self.decoder = model.model
        self.lm_head = model.lm_head
        self.eval()

    def step(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past: list[torch.Tensor],
    ) -> tuple[torch.Tensor, ...]:
        """Return ``(logits, *present)`` for ``S`` new tokens after the ``past`` cache."""
        hidden = self.decoder.embed_tokens(input_ids)
        mask = cached_causal_mask(attention_mask, input_ids.shape[1], hidden.dtype)
        rotary = self.decoder.rotary_emb(hidden, position_ids)
        cache = TensorCache(past)
        for layer in self.decoder.layers:
            hidden = layer(hidden, attention_mask=mask, position_embeddings=rotary, cache=cache)
        return (self.lm_head(self.decoder.norm(hidden)), *cache.present)


class PrefillWrapper(CachedDecoder):
    """``(input_ids, attention_mask, position_ids) -> (logits, *present)``: the prompt pass.

    Args:
        model: a causal LM the export wrapper can drive (see
            :func:`~kd_convert.wrapper.check_supported`).

    >>> import tempfile, torch
    >>> from kd_train.testing import save_tiny_llama
    >>> from kd_convert.stateful import PrefillWrapper
    >>> from kd_convert.wrapper import load_student
    >>> model = load_student(save_tiny_llama(tempfile.mkdtemp()))
    >>> ids = torch.tensor([[5, 6, 7]], dtype=torch.int32)
    >>> out = PrefillWrapper(model)(ids, torch.ones_like(ids), torch.arange(3)[None].int())
    >>> [tuple(t.shape) for t in out[:2]]
    [(1, 3, 320), (1, 2, 3, 8)]
    """

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Return logits ``[B, T, V]`` and the ``2 * L`` present tensors ``[B, H, T, D]``."""
        return self.step(input_ids, attention_mask, position_ids, [])


class DecodeWrapper(CachedDecoder):
    """``(input_ids, attention_mask, position_ids, *past_key_values) -> (logits, *present)``.

    One decode step. ``past_key_values`` is the flat list ``key_0, value_0, key_1, ...`` of
    ``[B, H, P, D]`` tensors (the order of :func:`past_names`).
    """

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        *past_key_values: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """Return logits ``[B, 1, V]`` and the present tensors ``[B, H, P + 1, D]``."""
        return self.step(input_ids, attention_mask, position_ids, list(past_key_values))


class BufferCache:
    """A cache object that writes into preallocated ``[L, B, H, max_length, D]`` buffers.

    The new keys/values of ``S`` tokens go to positions ``end - S .. end - 1`` (``end`` is the
    attention mask's length), and attention reads positions ``0 .. end - 1``: both come from
    shapes, not values, so Core ML converts the writes to state updates.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, end: int) -> None:
        self.keys, self.values, self.end = keys, values, end

    def update(
        self,
        key: torch.Tensor,
        value: torch.Tensor,
        layer_idx: int,
        *args: object,
        **kwargs: object,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``key``/``value`` of layer ``layer_idx``; return the cache up to ``end``."""
        start = self.end - key.shape[2]
        self.keys[layer_idx, :, :, start : self.end] = key
        self.values[layer_idx, :, :, start : self.end] = value
        return (
            self.keys[layer_idx, :, :, : self.end],
            self.values[layer_idx, :, :, : self.end],
        )


class StatefulWrapper(nn.Module):
    """``(input_ids, attention_mask, position_ids) -> logits`` with the cache in buffers.

    The Core ML generation graph: ``key_cache`` / ``value_cache`` are buffers of shape
    ``[L, B, H, max_length, D]`` that the forward updates in place (Core ML states). One graph
    serves prefill (``S`` prompt tokens, mask of length ``S``) and decode (``S = 1``, mask of
    length ``P + 1``); the caller keeps the mask, as with the other formats.

    Args:
        model: a causal LM the export wrapper can drive.
        layout: the cache layout (its ``max_length`` sizes the buffers).
        batch_size: the fixed batch dimension.
    """

    key_cache: torch.Tensor
    value_cache: torch.Tensor

    def __init__(self, model: PreTrainedModel, layout: CacheLayout, batch_size: int = 1) -> None:
        super().__init__()
        check_supported(model)
        self.decoder = model.model
        self.lm_head = model.lm_head
        shape = (layout.layers, batch_size, layout.kv_heads, layout.max_length, layout.head_dim)
        self.register_buffer("key_cache", torch.zeros(shape))
        self.register_buffer("value_cache", torch.zeros(shape))
        self.eval()

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
    ) -> torch.Tensor:
        """Return logits ``[B, S, V]``; the cache buffers now also hold these ``S`` tokens."""
        hidden = self.decoder.embed_tokens(input_ids)
        mask = cached_causal_mask(attention_mask, input_ids.shape[1], hidden.dtype)
        rotary = self.decoder.rotary_emb(hidden, position_ids)
        cache = BufferCache(self.key_cache, self.value_cache, attention_mask.shape[1])
        for layer in self.decoder.layers:
            hidden = layer(hidden, attention_mask=mask, position_embeddings=rotary, cache=cache)
        logits: torch.Tensor = self.lm_head(self.decoder.norm(hidden))
        return logits


def check_cache_length(length: int, max_length: int, what: str = "prompt + new tokens") -> None:
    """Raise :class:`~kd_convert.errors.ValidationError` when ``length`` exceeds the cache.

    >>> from kd_convert.stateful import check_cache_length
    >>> check_cache_length(64, 64)
    >>> try:
    ...     check_cache_length(65, 64)
    ... except Exception as exc:
    ...     print(str(exc).split(":")[0])
    prompt + new tokens = 65 positions exceed the cache's maximum length 64
    """
    if length > max_length:
        raise ValidationError(
            f"{what} = {length} positions exceed the cache's maximum length {max_length}: "
            f"shorten the prompt or max_new_tokens, or re-export with --max-length >= {length}"
        )
