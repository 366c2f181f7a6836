"""The tiny model behind the loopback server: greedy generation and per-position top-k."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from kd_train.teachers.tokens import TokenMap


class ServedModel:
    """A saved ``transformers`` model and its tokenizer, run one request at a time.

    Attributes:
        tokenizer: the model directory's tokenizer.
        model: the model, in eval mode.
    """

    def __init__(self, model_dir: str | Path) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.lock = threading.Lock()
        self._bytes: list[bytes | None] | None = None

    def encode(self, prompt: str | list[int]) -> list[int]:
        """Token ids of a text prompt (ids are kept as given); ``[bos]`` for an empty one."""
        ids = list(prompt) if isinstance(prompt, list) else self.tokenizer(prompt)["input_ids"]
        return ids or [self.tokenizer.bos_token_id]

    @torch.no_grad()
    def run(self, ids: list[int], max_tokens: int) -> tuple[list[int], torch.Tensor]:
        """Greedy-extend ``ids`` by up to ``max_tokens``; return new ids and all log-probs."""
        with self.lock:
            seq = torch.tensor([ids])
            for _ in range(max_tokens):
                nxt = int(self.model(seq).logits[0, -1].argmax())
                seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
                if nxt == self.tokenizer.eos_token_id:
                    break
            logprobs = torch.log_softmax(self.model(seq).logits[0].float(), dim=-1)
        return seq[0, len(ids) :].tolist(), logprobs

    def vocab_size(self) -> int:
        """How many token ids the model has."""
        return int(self.model.get_input_embeddings().weight.shape[0])

    def shown(self, ids: list[int]) -> list[str]:
        """Token strings as llama.cpp's server shows them (its bytes, invalid UTF-8 dropped).

        ``""`` for a token that holds part of a character, and for a special token.
        """
        special = set(self.tokenizer.all_special_ids)
        if self._bytes is None:
            self._bytes = TokenMap.of(self.tokenizer).token_bytes
        return [
            "" if i in special else (self._bytes[i] or b"").decode("utf-8", errors="ignore")
            for i in ids
        ]

    def names(self, ids: list[int], as_ids: bool) -> list[str]:
        """Token strings of ``ids``: vocabulary strings, or ``"token_id:N"`` (``as_ids``)."""
        if as_ids:
            return [f"token_id:{i}" for i in ids]
        return list(self.tokenizer.convert_ids_to_tokens(ids))

    def top(self, logprobs: torch.Tensor, k: int, as_ids: bool = False) -> list[tuple[str, float]]:
        """The ``k`` most likely ``(token string, log-prob)`` pairs of one position."""
        values, idx = logprobs.topk(k)
        names = self.names(idx.tolist(), as_ids)
        return [(n, float(v)) for n, v in zip(names, values.tolist(), strict=True)]

    def prompt_entry(self, logprobs: torch.Tensor, token: int, k: int) -> dict[str, Any]:
        """One ``prompt_logprobs`` entry (vLLM's): the top-``k``, plus ``token`` if outside it."""
        best = logprobs.topk(k).indices.tolist()
        chosen = [*best, *([] if token in best else [token])]
        return {
            str(i): {
                "logprob": float(logprobs[i]),
                "rank": int((logprobs > logprobs[i]).sum()) + 1,
                "decoded_token": str(self.tokenizer.decode([i])),
            }
            for i in chosen
        }
