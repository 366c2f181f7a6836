"""Synthetic KD records, for benchmarks and load tests.

>>> import random
>>> from kd_train.data import KDRecord
>>> from kd_train.testing import synthetic_record
>>> row = synthetic_record(7, random.Random(0), topk=True)
>>> words = len(row["completion"].split())
>>> KDRecord.from_dict(row).id, len(row["teacher_topk"]["ids"]) == words
('r7', True)
"""

from __future__ import annotations

import math
import random
from typing import Any

#: Words of the synthetic records written by :func:`synthetic_record`.
SYNTHETIC_WORDS = (
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog",
    "tool", "call", "get_weather", "city", "Paris", "unit",
)  # fmt: skip


def synthetic_record(index: int, rng: random.Random, *, topk: bool = False) -> dict[str, Any]:
    """A valid KD record of random words, id ``r<index>``, as a JSON-ready dict.

    The completion has 12-24 words and one ``integration`` span; with ``topk`` it carries
    four teacher log-probs per word (descending, probabilities summing to at most 0.95),
    ids below 4096. The same ``rng`` state gives the same record.
    """
    n = rng.randint(12, 24)
    completion = " ".join(rng.choices(SYNTHETIC_WORDS, k=n))
    record: dict[str, Any] = {
        "schema_version": 1,
        "id": f"r{index}",
        "prompt": " ".join(rng.choices(SYNTHETIC_WORDS, k=rng.randint(6, 14))) + ":",
        "completion": completion,
    }
    if topk:
        record["teacher_topk"] = {
            "ids": [rng.sample(range(4096), 4) for _ in range(n)],
            "logprobs": [_synthetic_logprobs(rng) for _ in range(n)],
        }
    record["spans"] = [{"kind": "integration", "start": 0, "end": min(4, len(completion))}]
    return record


def _synthetic_logprobs(rng: random.Random) -> list[float]:
    # Four log-probs, descending, whose probabilities sum to at most 0.95.
    weights = sorted((rng.random() + 0.05 for _ in range(4)), reverse=True)
    total = sum(weights) / 0.95
    return [round(math.log(w / total), 4) for w in weights]
