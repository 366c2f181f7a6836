"""The client: it builds the requests, reads the answers and composes the parts that send them.

See :mod:`kd_train.teachers.http` for the request path.
"""

from __future__ import annotations

import math
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import torch

from kd_train.data.batching import Batch
from kd_train.errors import KDTrainError
from kd_train.store import Store, cache_key
from kd_train.teachers.base import TeacherOutput
from kd_train.teachers.http.budget import Budget
from kd_train.teachers.http.cache import ResponseCache
from kd_train.teachers.http.config import HTTPTeacherConfig
from kd_train.teachers.http.exchange import Call, Counters, HTTPTeacherError, Response
from kd_train.teachers.http.retrying import Retrying
from kd_train.teachers.http.throttle import Throttle
from kd_train.teachers.http.wire import Wire
from kd_train.teachers.openai_api import (
    PATHS,
    MalformedResponseError,
    first_mismatch,
    generation_request,
    parse_scores,
    scoring_request,
    token_to_id,
)
from kd_train.teachers.retry import Uniform

_CROSS = (
    "an HTTP teacher must share the student's tokenizer; cross-tokenizer distillation is "
    "not supported by this teacher kind"
)

#: Tokens added to a text prompt's byte count for the worst case (chat template, BOS).
PROMPT_OVERHEAD_TOKENS = 16


class HTTPTeacher:
    """A teacher behind an OpenAI-compatible HTTP endpoint; see :mod:`kd_train.teachers.http`.

    Args:
        config: endpoint, limits, prices and budget.
        api_key: sent as ``Authorization: Bearer ...`` when given; never logged or stored.
        store: response cache + ledger; required when ``config.budget`` is set.
        tokenizer: the teacher's tokenizer: maps returned token strings to ids (needed by
            :meth:`topk`) and counts prompt tokens for the worst case.
        owner: the name this worker's reservations and charges carry in the ledger.
        transport: an ``httpx`` transport (tests); default: real network.
        rng: randomness of the backoff jitter.
    """

    def __init__(
        self,
        config: HTTPTeacherConfig,
        *,
        api_key: str | None = None,
        store: Store | None = None,
        tokenizer: Any | None = None,
        owner: str = "kd-train",
        transport: httpx.BaseTransport | None = None,
        rng: Uniform | None = None,
    ) -> None:
        if config.budget is not None and store is None:
            raise ValueError("a budget needs a store (the ledger lives there); pass store=")
        self.config = config
        self.store = store
        self.tokenizer = tokenizer
        self.owner = owner
        self.counters = Counters()
        self._vocab: dict[str, int] | None = None
        self._lock = threading.Lock()
        self._wire = Wire(config, api_key, transport)
        budget = Budget(self._wire, config, store, owner, self._count, self._count_tokens)
        limited = Throttle(budget, config.rpm, config.concurrency)
        jitter: Uniform = rng or random.Random()  # noqa: S311 - backoff jitter, not crypto
        # retry -> cache -> limits -> budget -> wire: every attempt checks the cache first.
        self._stack = Retrying(
            ResponseCache(limited, store, self._count),
            config.retry,
            jitter,
            self._count,
            config.base_url,
        )

    def __repr__(self) -> str:
        return f"HTTPTeacher(model={self.config.model!r}, base_url={self.config.base_url!r})"

    def __enter__(self) -> HTTPTeacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections."""
        self._wire.close()

    @property
    def vocab_size(self) -> int:
        """Size of the tokenizer's vocabulary (a tokenizer is required)."""
        return len(self._require_tokenizer())

    def generate(self, prompt: str) -> Response:
        """Answer ``prompt`` (``config.api``, ``max_tokens``, ``top_logprobs``).

        The worst case counts the prompt's UTF-8 bytes +
        :data:`~kd_train.teachers.http.teacher.PROMPT_OVERHEAD_TOKENS` as
        its tokens.
        """
        cfg = self.config
        body = generation_request(
            cfg.api, cfg.model, prompt, cfg.max_tokens, cfg.top_logprobs, cfg.temperature
        )
        return self._request(PATHS[cfg.api], body, self._prompt_bound(prompt), cfg.max_tokens)

    def __call__(self, batch: Batch) -> TeacherOutput:
        """Score the batch's rows: :meth:`topk` with ``k = config.top_logprobs``.

        Raises:
            HTTPTeacherError: ``top_logprobs`` is below 1, or as :meth:`topk`.
        """
        k = self.config.top_logprobs
        if k < 1:
            raise HTTPTeacherError(
                f"an HTTP teacher scores training rows with top_logprobs alternatives per "
                f"position (teacher.topk in a run config), and it is {k}; set it >= 1"
            )
        return self.topk(batch.input_ids, batch.attention_mask, k)

    def topk(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int) -> TeacherOutput:
        r"""Top-``k`` next-token log-probs at every position of ``input_ids`` ``[B, T]``.

        One request per row (``config.scoring``) scores the row's unmasked tokens through
        the same path as generation (cache, budget, retries, rate limit); the rows are sent
        ``config.concurrency`` at a time. Returns a top-k
        :class:`~kd_train.teachers.base.TeacherOutput`: ``ids`` int64 and ``logprobs``
        float32 ``[B, T, k]``, ``mask = attention_mask.bool()``, ``aligned="logits"`` (row
        ``t`` is the distribution of the token after ``input_ids[:, t]``), on the device of
        ``input_ids``. Masked positions hold distinct placeholder ids ``0 .. k-1`` at
        :math:`\log \frac{1}{k+1}` each.

        Raises:
            HTTPTeacherError: the endpoint names a prompt token differently from the local
                tokenizer (another tokenizer), returns fewer than ``k`` alternatives, or an
                answer without the scores; or as for every request.
        """
        vocab = self._vocab_map()
        batch, length = input_ids.shape
        ids = torch.arange(k, dtype=torch.int64).expand(batch, length, k).clone()
        logprobs = torch.full((batch, length, k), -math.log(k + 1), dtype=torch.float32)
        rows = {}
        for row in range(batch):
            positions = attention_mask[row].nonzero().flatten().tolist()
            if positions:
                rows[row] = (positions, [int(t) for t in input_ids[row, positions].tolist()])
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            scored = {
                row: pool.submit(self._score_row, row, positions, tokens, k)
                for row, (positions, tokens) in rows.items()
            }
        for row, (positions, _tokens) in rows.items():
            tops = scored[row].result()  # the first failed row, in row order, raises
            for pos, top in zip(positions, tops, strict=True):
                if len(top) < k:
                    raise HTTPTeacherError(
                        f"topk: the endpoint returned {len(top)} alternatives at position "
                        f"{pos} of row {row}, fewer than k={k}; lower teacher.topk"
                    )
                ids[row, pos] = torch.tensor(
                    [self._token_id(t, vocab, row, pos) for t, _ in top[:k]]
                )
                logprobs[row, pos] = torch.tensor([lp for _, lp in top[:k]])
        return TeacherOutput(
            ids=ids.to(input_ids.device),
            logprobs=logprobs.to(input_ids.device),
            mask=attention_mask.bool(),
            aligned="logits",
        )

    def _score_row(
        self, row: int, positions: list[int], tokens: list[int], k: int
    ) -> list[list[tuple[str, float]]]:
        """Request the scores of one row's ``tokens`` and check the endpoint's tokenizer."""
        scoring = self.config.scoring
        body = scoring_request(scoring, self.config.model, tokens, k)
        answer = self._request(PATHS["completions"], body, len(tokens), 1)
        try:
            scores = parse_scores(scoring, answer.body, tokens)
        except MalformedResponseError as exc:
            raise HTTPTeacherError(f"topk: {exc}") from exc
        bad = first_mismatch(self._require_tokenizer(), tokens, scores.returned)
        if bad is not None:
            sent = self._require_tokenizer().convert_ids_to_tokens(tokens[bad])
            raise HTTPTeacherError(
                f"topk: row {row}, position {positions[bad]}: sent token id {tokens[bad]} "
                f"({sent!r}), the endpoint returned {scores.returned[bad]!r}: it serves "
                f"another tokenizer than the student's ({_CROSS})"
            )
        return scores.top

    @staticmethod
    def _token_id(token: str, vocab: dict[str, int], row: int, pos: int) -> int:
        try:
            return token_to_id(token, vocab)
        except KDTrainError:
            raise HTTPTeacherError(
                f"topk: row {row}, position {pos}: the endpoint returned the alternative "
                f"{token!r}, which is not in the student's tokenizer. Either the endpoint "
                f"serves another tokenizer ({_CROSS}), or it names tokens by their text: "
                "with vLLM, set teacher.http.scoring to 'prompt_logprobs' (it asks for "
                "'token_id:N' names)"
            ) from None

    # -- the request path -------------------------------------------------------------

    def _request(
        self, path: str, body: dict[str, Any], prompt_tokens: int, completion_tokens: int
    ) -> Response:
        key = cache_key(self.config.model, {"path": path, "body": body})
        worst = self.config.cost_nanos(prompt_tokens, completion_tokens)
        return self._stack.send(Call(path, body, key, worst))

    # -- helpers ------------------------------------------------------------------------

    def _prompt_bound(self, prompt: str) -> int:
        return len(prompt.encode("utf-8")) + PROMPT_OVERHEAD_TOKENS

    def _count_tokens(self, text: str) -> int:
        if self.tokenizer is None:
            return len(text.encode("utf-8"))
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _require_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise KDTrainError(
                "HTTPTeacher needs the teacher's tokenizer for token ids (tokenizer=...)"
            )
        return self.tokenizer

    def _vocab_map(self) -> dict[str, int]:
        if self._vocab is None:
            self._vocab = dict(self._require_tokenizer().get_vocab())
        return self._vocab

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self.counters, name, getattr(self.counters, name) + delta)
