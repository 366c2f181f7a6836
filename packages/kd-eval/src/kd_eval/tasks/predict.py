"""Run a causal LM on prompts: score candidate labels, or generate text greedily.

Prompts are laid out exactly as the trainer lays out a KD record
(:func:`kd_train.data.tokenization.encode_record`): ``[bos] + prompt tokens``, with ``bos``
whenever the tokenizer has one, and the prompt and completion tokenized separately.

Label scoring: for prompt tokens ``x`` and a label's tokens ``y_1..y_m`` (the label written
as a completion is written, i.e. ``prefix + label`` where ``prefix`` is the whitespace the
data's completions start with), ``score(y) = Σ_j log p(y_j | x, y_<j)`` (or that sum divided
by ``m`` with ``length_normalize``); the predicted class is the label with the highest score.
All labels of one prompt run as one right-padded batch ``[L, len(x) + max_m]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812


def _prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """``[bos] + prompt tokens``, the layout the trainer uses (no ``bos`` if there is none)."""
    bos = [] if tokenizer.bos_token_id is None else [int(tokenizer.bos_token_id)]
    return bos + list(tokenizer(prompt, add_special_tokens=False)["input_ids"])


@torch.no_grad()
def label_scores(
    model: Any,
    tokenizer: Any,
    prompt: str,
    labels: Sequence[str],
    *,
    length_normalize: bool = False,
    prefix: str = "",
) -> list[float]:
    """Return the log-likelihood of each label given ``prompt`` (see the module docstring).

    ``prefix`` is put before every label (e.g. ``" "`` when the data's completions start
    with a space): with a byte-level BPE, ``" Yes."`` and ``"Yes."`` are different tokens.

    Raises:
        ValueError: ``prompt`` encodes to no tokens and the tokenizer has no BOS token.
    """
    x = _prompt_ids(tokenizer, prompt)
    if not x:
        raise ValueError("an empty prompt needs a BOS token to condition on")
    ys = [
        list(tokenizer(prefix + label, add_special_tokens=False)["input_ids"]) for label in labels
    ]
    width = len(x) + max(len(y) for y in ys)
    pad = int(tokenizer.pad_token_id or 0)
    ids = torch.full((len(ys), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ys), width), dtype=torch.long)
    for row, y in enumerate(ys):
        ids[row, : len(x) + len(y)] = torch.tensor(x + y)
        mask[row, : len(x) + len(y)] = 1
    log_probs = F.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
    scores = []
    for row, y in enumerate(ys):
        positions = torch.arange(len(x) - 1, len(x) + len(y) - 1)
        total = float(log_probs[row, positions, torch.tensor(y)].sum())
        scores.append(total / len(y) if length_normalize else total)
    return scores


def classify_by_likelihood(
    model: Any,
    tokenizer: Any,
    prompt: str,
    labels: Sequence[str],
    *,
    length_normalize: bool = False,
    prefix: str = "",
) -> str:
    """Return the label with the highest log-likelihood given ``prompt`` (first on ties)."""
    scores = label_scores(
        model, tokenizer, prompt, labels, length_normalize=length_normalize, prefix=prefix
    )
    return labels[max(range(len(labels)), key=scores.__getitem__)]


@torch.no_grad()
def generate_text(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int = 32) -> str:
    """Greedily generate up to ``max_new_tokens`` after ``prompt``; return the new text only."""
    x = _prompt_ids(tokenizer, prompt)
    ids = torch.tensor([x])
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    return str(tokenizer.decode(out[0, len(x) :], skip_special_tokens=True))
